"""Leases of one owner that overlap keep each other's commits unless they wrote first.

Each test drives leases the way the SQLAlchemy proxy does
(:meth:`Lease.prepare_statement`, ``mark`` / ``recover``), or a direct driver
(:meth:`Lease.note_statement`), on PostgreSQL, SQLite and MariaDB.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from sqlsandbox.ownership import Lease, Sandbox
from sqlsandbox.ownership._connection import GUARD, MARK
from sqlsandbox.ownership._ddl import READ, UNDO, WRITE, statement_kind

from .conftest import Backend, execute_raw

SELECT = "SELECT name FROM items WHERE name LIKE %s ORDER BY name"
INSERT = "INSERT INTO items (name) VALUES (%s)"


def stmt(lease: Lease, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement the way the SQLAlchemy proxy does."""
    lease.enter()
    guard = False
    try:
        flags = lease.prepare_statement(sql)
        if flags & MARK:
            lease.mark()
        guard = bool(flags & GUARD)
        rows = execute_raw(lease.raw, sql, params)
    except BaseException as exc:
        try:
            if guard:
                lease.recover()
        finally:
            lease.exit_with(exc)
        raise
    lease.exit(check=True)
    return rows


def noted(lease: Lease, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement the way a direct driver does (note, no segments)."""
    lease.enter()
    try:
        lease.note_statement(sql)
        rows = execute_raw(lease.raw, sql, params)
    except BaseException as exc:
        lease.exit_with(exc)
        raise
    lease.exit(check=True)
    return rows


def session(sandbox: Sandbox, backend: Backend) -> Lease:
    """A lease with its transaction open, as an app session has after autobegin."""
    lease = sandbox.lease(backend.connector())
    assert lease is not None
    lease.begin()
    return lease


def names(lease: Lease, tag: str) -> list[str]:
    if not lease.in_transaction:
        lease.begin()
    return [row[0] for row in stmt(lease, SELECT, (tag + "%",))]


def test_a_session_that_only_read_keeps_what_a_later_session_committed(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    with sandbox.checkout():
        test_session = session(sandbox, backend)
        assert names(test_session, tag) == []
        request = session(sandbox, backend)
        stmt(request, INSERT, (tag + "posted",))
        request.commit()
        test_session.rollback()  # the test's session is closed or rolled back
        assert names(session(sandbox, backend), tag) == [tag + "posted"]


def test_a_background_commit_survives_the_request_session_closing(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    with sandbox.checkout():
        request = session(sandbox, backend)
        stmt(request, INSERT, (tag + "request",))
        request.commit()
        assert names(request, tag) == [tag + "request"]  # autobegins again, for a read
        background = session(sandbox, backend)
        stmt(background, INSERT, (tag + "background",))
        background.commit()
        request.close()  # the yield dependency ends after the background task ran
        assert names(session(sandbox, backend), tag) == [tag + "background", tag + "request"]


def test_a_reader_below_an_open_session_does_not_end_it(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    with sandbox.checkout():
        reader = session(sandbox, backend)
        names(reader, tag)
        writer = session(sandbox, backend)
        stmt(writer, INSERT, (tag + "a",))
        reader.rollback()
        assert writer.in_transaction
        stmt(writer, INSERT, (tag + "b",))
        writer.commit()
        assert names(session(sandbox, backend), tag) == [tag + "a", tag + "b"]


def test_own_writes_after_another_session_committed_roll_back_alone(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    with sandbox.checkout():
        test_session = session(sandbox, backend)
        names(test_session, tag)
        request = session(sandbox, backend)
        stmt(request, INSERT, (tag + "request",))
        request.commit()
        stmt(test_session, INSERT, (tag + "mine",))
        assert names(test_session, tag) == [tag + "mine", tag + "request"]
        test_session.rollback()
        assert names(session(sandbox, backend), tag) == [tag + "request"]


def test_a_session_that_wrote_first_undoes_what_came_after_and_says_so(
    backend: Backend, sandbox: Sandbox, tag: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The limit: a savepoint cannot skip work that landed after the session's first write."""
    with sandbox.checkout(name="test_wrote_first"):
        test_session = session(sandbox, backend)
        stmt(test_session, INSERT, (tag + "mine",))
        request = session(sandbox, backend)
        stmt(request, INSERT, (tag + "request",))
        request.commit()
        with caplog.at_level(logging.WARNING, logger="sqlsandbox.ownership"):
            test_session.rollback()
        assert names(session(sandbox, backend), tag) == []
    assert "test_wrote_first" in caplog.text
    assert "undid work of another session" in caplog.text


def test_a_failed_statement_of_an_overlapped_session_spares_the_session_above(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    with sandbox.checkout():
        first = session(sandbox, backend)
        stmt(first, INSERT, (tag + "taken",))
        first.commit()
        loser = session(sandbox, backend)
        names(loser, tag)
        winner = session(sandbox, backend)
        stmt(winner, INSERT, (tag + "winner",))
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            stmt(loser, INSERT, (tag + "taken",))
        loser.rollback()  # what the app does after the error
        assert winner.in_transaction
        stmt(winner, INSERT, (tag + "winner2",))
        winner.commit()
        assert names(session(sandbox, backend), tag) == [
            tag + "taken",
            tag + "winner",
            tag + "winner2",
        ]


def test_a_failed_read_on_top_of_others_work_leaves_that_work(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    with sandbox.checkout():
        request = session(sandbox, backend)
        names(request, tag)
        background = session(sandbox, backend)
        stmt(background, INSERT, (tag + "background",))
        background.commit()
        with pytest.raises(Exception, match=r"(?i)no such|does not exist|doesn't exist"):
            stmt(request, "SELECT name FROM no_such_table")
        request.rollback()
        assert names(session(sandbox, backend), tag) == [tag + "background"]


def test_unsandboxed_owner_a_reading_session_commits_what_the_other_committed(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    """With ``sandbox=False`` the first session holds the real transaction."""
    try:
        with sandbox.checkout(sandbox=False):
            reader = session(sandbox, backend)  # BEGIN
            assert names(reader, tag) == []
            writer = session(sandbox, backend)  # SAVEPOINT inside it
            stmt(writer, INSERT, (tag + "real",))
            writer.commit()
            reader.rollback()  # only read: COMMIT, which keeps the writer's row
        assert backend.committed(tag) == [tag + "real"]
    finally:
        backend.cleanup(tag)


def test_a_savepoint_that_ran_nothing_is_a_barrier(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    """A scope's savepoint (no statements of its own) still undoes everything after it."""
    with sandbox.checkout():
        scope = session(sandbox, backend)
        request = session(sandbox, backend)
        stmt(request, INSERT, (tag + "test-data",))
        request.commit()
        scope.rollback()
        assert names(session(sandbox, backend), tag) == []


def test_a_nested_block_is_undone_with_the_transaction_it_is_nested_in(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    """A driver's ``transaction()`` block inside a connection's transaction, as psycopg nests."""
    with sandbox.checkout():
        outer = session(sandbox, backend)
        noted(outer, SELECT, (tag + "%",))
        block = sandbox.lease(backend.connector())
        assert block is not None
        block.nest_in(outer)
        block.begin()
        noted(block, INSERT, (tag + "in-block",))
        block.commit()
        outer.rollback()
        assert names(session(sandbox, backend), tag) == []


def test_direct_drivers_that_note_statements_keep_commits_too(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    with sandbox.checkout():
        test_session = session(sandbox, backend)
        noted(test_session, SELECT, (tag + "%",))
        request = session(sandbox, backend)
        noted(request, INSERT, (tag + "posted",))
        request.commit()
        test_session.rollback()
        assert names(session(sandbox, backend), tag) == [tag + "posted"]


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", READ),
        ("  /* c */ select count(*) from items where id in (1, 2)", READ),
        ("-- why\nSELECT lower(name) FROM items", READ),
        ("(SELECT 1) UNION (SELECT 2)", READ),
        ("WITH x AS (SELECT 1) SELECT * FROM x", READ),
        ("SHOW search_path", READ),
        ("EXPLAIN SELECT 1", READ),
        ("VALUES (1), (2)", READ),
        ("FETCH 10 FROM c", READ),
        ("select pg_catalog.version()", READ),
        ("SELECT updated_at FROM items", READ),
        ("SELECT * FROM items FOR UPDATE", WRITE),
        ("SELECT * FROM items FOR SHARE", WRITE),
        ("SELECT * FROM items LOCK IN SHARE MODE", WRITE),
        ("SELECT name INTO copy FROM items", WRITE),
        ("WITH gone AS (DELETE FROM items RETURNING id) SELECT * FROM gone", WRITE),
        ("EXPLAIN ANALYZE DELETE FROM items", WRITE),
        ("SELECT nextval('items_id_seq')", WRITE),
        ("SELECT pg_advisory_lock(1)", WRITE),
        ("SELECT app_function()", WRITE),
        ('SELECT "app_function"()', WRITE),
        ("SELECT 1; DROP TABLE items", WRITE),
        ("INSERT INTO items (name) VALUES ('x')", WRITE),
        ("update items set name = 'y'", WRITE),
        ("SET search_path TO x", WRITE),
        ("SAVEPOINT sa_savepoint_1", WRITE),
        ("ROLLBACK TO SAVEPOINT sa_savepoint_1", UNDO),
        ("RELEASE SAVEPOINT sa_savepoint_1", UNDO),
        (";", READ),
        ("?", WRITE),
        (None, WRITE),
    ],
)
def test_statements_are_told_apart_by_their_text(sql: Any, kind: int) -> None:
    assert statement_kind(sql) == kind
