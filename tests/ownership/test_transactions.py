"""The app's transactions inside the sandbox become savepoints on the owner's transaction."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sqlsandbox import OwnershipError
from sqlsandbox.ownership import Sandbox, implicit_commit

from .conftest import Backend, insert, names, run


def test_commit_then_read_sees_the_data_and_rollback_undoes_only_its_part(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    connector = backend.connector()
    with sandbox.checkout():
        app = sandbox.lease(connector)
        assert app is not None
        app.begin()
        insert(app, tag + "a")
        app.commit()
        assert not app.in_transaction
        reader = sandbox.lease(connector)
        assert reader is not None
        assert names(reader, tag) == [tag + "a"]
        app.begin()
        insert(app, tag + "b")
        app.rollback()
        assert names(reader, tag) == [tag + "a"]
    assert backend.committed(tag) == []


def test_nested_app_transactions_and_overlapping_leases(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    connector = backend.connector()
    with sandbox.checkout():
        outer = sandbox.lease(connector)
        inner = sandbox.lease(connector)
        assert outer is not None and inner is not None
        outer.begin()
        insert(outer, tag + "outer")
        inner.begin()
        insert(inner, tag + "inner")
        inner.rollback()  # the inner transaction alone is undone
        assert names(outer, tag) == [tag + "outer"]
        inner.begin()
        insert(inner, tag + "inner2")
        outer.commit()  # committed while inner is still open: kept for later
        assert outer.in_transaction is False and inner.in_transaction
        insert(inner, tag + "inner3")
        inner.commit()
        assert names(outer, tag) == [tag + "inner2", tag + "inner3", tag + "outer"]
        # A rollback of an outer transaction also undoes what later ones did.
        outer.begin()
        insert(outer, tag + "x")
        inner.begin()
        insert(inner, tag + "y")
        outer.rollback()
        assert not inner.in_transaction
        inner.commit()  # nothing left to commit: a no-op, not an error
        assert names(outer, tag) == [tag + "inner2", tag + "inner3", tag + "outer"]
        outer.close()
        inner.close()


def test_a_failing_statement_does_not_poison_the_test_transaction(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    connector = backend.connector()
    with sandbox.checkout():
        lease = sandbox.lease(connector)
        assert lease is not None
        insert(lease, tag + "before")
        lease.begin()
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            insert(lease, tag + "before")
        lease.rollback()  # what every driver does after an error
        insert(lease, tag + "after")
        assert names(lease, tag) == [tag + "after", tag + "before"]


def test_close_rolls_back_what_a_lease_left_open(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    connector = backend.connector()
    with sandbox.checkout():
        lease = sandbox.lease(connector)
        assert lease is not None
        lease.begin()
        insert(lease, tag + "left-open")
        lease.close()
        other = sandbox.lease(connector)
        assert other is not None
        assert names(other, tag) == []


def test_raw_commit_sent_by_the_app_is_caught(backend: Backend, sandbox: Sandbox, tag: str) -> None:
    connector = backend.connector()
    owner = sandbox.checkout(name="test_raw_commit")
    lease = sandbox.lease(connector)
    assert lease is not None
    insert(lease, tag + "a")
    with pytest.raises(OwnershipError, match=r"ended the test's transaction.*lost"):
        run(lease, "COMMIT")
    with pytest.raises(OwnershipError, match=r"connection of owner 'test_raw_commit' was lost"):
        run(lease, "SELECT 1")
    sandbox.checkin(owner)
    backend.cleanup(tag)
    with sandbox.checkout():  # the next owner is healthy
        fresh = sandbox.lease(connector)
        assert fresh is not None
        assert run(fresh, "SELECT 1") == [(1,)]


@pytest.mark.parametrize(
    ("sql", "verb"),
    [
        ("CREATE TABLE t (id int)", "CREATE TABLE"),
        ("  /* made by alembic */ alter table items add column x int", "ALTER TABLE"),
        ("DROP INDEX ix ON items", "DROP INDEX"),
        ("TRUNCATE items", "TRUNCATE"),
        ("create or replace view v as select 1", "CREATE OR REPLACE VIEW"),
        ("RENAME TABLE a TO b", "RENAME TABLE"),
        ("LOCK TABLES items WRITE", "LOCK TABLES"),
        ("SET autocommit = 1", "SET AUTOCOMMIT"),
        ("START TRANSACTION", "START TRANSACTION"),
    ],
)
def test_statements_that_mariadb_commits_implicitly_are_recognised(sql: str, verb: str) -> None:
    assert implicit_commit(sql) == verb


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "INSERT INTO items (name) VALUES ('create table')",
        "CREATE TEMPORARY TABLE tmp (id int)",
        "DROP TEMPORARY TABLE tmp",
        "UPDATE items SET name = 'x'",
        "SAVEPOINT sa_savepoint_1",
        "with x as (select 1) select * from x",
    ],
)
def test_ordinary_statements_pass_on_mariadb(sql: str) -> None:
    assert implicit_commit(sql) is None


def test_ddl_inside_a_mariadb_sandbox_fails_before_it_commits(
    maria: Backend, make_sandbox: Callable[..., Sandbox], tag: str
) -> None:
    sandbox = make_sandbox(maria.url)
    connector = maria.connector()
    with sandbox.checkout(name="test_ddl", connector=connector):
        lease = sandbox.lease(connector)
        assert lease is not None and lease.guard_ddl
        insert(lease, tag + "a")
        with pytest.raises(
            OwnershipError,
            match=r"'CREATE TABLE' commits implicitly on MariaDB.*isolation=\"database\"",
        ):
            lease.check_statement("CREATE TABLE oops (id int)")
        assert names(lease, tag) == [tag + "a"]
    assert maria.committed(tag) == []
    assert maria.plain("SHOW TABLES LIKE 'oops'") == []


def test_ddl_that_slipped_through_on_mariadb_is_reported(
    maria: Backend, make_sandbox: Callable[..., Sandbox], tag: str
) -> None:
    sandbox = make_sandbox(maria.url)
    connector = maria.connector()
    try:
        with sandbox.checkout(name="test_sneaky_ddl", connector=connector):
            lease = sandbox.lease(connector)
            assert lease is not None
            insert(lease, tag + "a")
            # A driver that does not call check_statement: the server commits, and
            # the check after the statement notices the transaction is gone.
            with pytest.raises(OwnershipError, match=r"ended the test's transaction"):
                run(lease, "CREATE TABLE IF NOT EXISTS items (id int)")
        assert maria.committed(tag) == [tag + "a"]  # which is why DDL must fail first
    finally:
        maria.cleanup(tag)
