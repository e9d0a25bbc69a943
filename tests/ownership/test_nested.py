"""Tests inside a scope owner's transaction start where the scope left the database.

The pytest plugin runs the tests of a module whose fixtures wrote data on the
scope owner's connection, each inside a :class:`NestedScope`. Its rollback
must undo what a checkin undoes: sequences (the next test's insert gets the
same id), ``lastval()``, session advisory locks and SQL prepared statements;
and keep what the scope wrote.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sqlsandbox.ownership import Lease, Sandbox
from sqlsandbox.ownership._nested import Baseline, nested_scope

from .conftest import Backend, run


def insert(lease: Lease, name: str) -> int:
    return int(run(lease, "INSERT INTO items (name) VALUES (%s) RETURNING id", (name,))[0][0])


def one(lease: Lease, sql: str) -> object:
    return run(lease, sql)[0][0]


def fails(lease: Lease, sql: str) -> str | None:
    """Run *sql* inside an app transaction (a savepoint); return its error, if any."""
    lease.begin()
    try:
        run(lease, sql)
    except Exception as exc:
        lease.rollback()
        return str(exc)
    lease.commit()
    return None


@pytest.mark.parametrize("no_xml", [False, True], ids=["guarded", "unguarded"])
def test_each_nested_test_starts_where_the_scope_left(
    pg: Backend, pg_sandbox: Sandbox, tag: str, no_xml: bool
) -> None:
    connector = pg_sandbox._connectors[0]
    owner = pg_sandbox.checkout(connector=connector)  # type: ignore[arg-type]
    lease = pg_sandbox.lease(connector)  # type: ignore[arg-type]
    assert lease is not None
    # The guarded restore fails on servers without libxml: then the retry without it runs.
    lease.adapter.no_xml = no_xml
    scope_id = insert(lease, f"{tag}scope")  # what a module-scoped fixture writes

    def nested_test(n: int) -> tuple[int, list[str]]:
        nested = nested_scope(owner)
        assert nested is not None
        try:
            rows = run(lease, "SELECT name FROM items WHERE name LIKE %s", (tag + "%",))
            seen = [r[0] for r in rows]
            first = insert(lease, f"{tag}test{n}")
            run(lease, "SELECT pg_advisory_lock(515151)")
            run(lease, f"PREPARE {tag}stmt AS SELECT 1")
            return first, seen
        finally:
            nested.rollback()

    results = [nested_test(n) for n in range(3)]
    assert results == [(scope_id + 1, [f"{tag}scope"])] * 3
    # The session is as clean as after a checkin, and the scope's row is still there.
    assert fails(lease, "SELECT lastval()") is not None
    assert pg.plain("SELECT pg_try_advisory_lock(515151)") == [(True,)]
    pg.plain("SELECT pg_advisory_unlock_all()")
    assert one(lease, f"SELECT count(*) FROM pg_prepared_statements WHERE name = '{tag}stmt'") == 0
    assert one(lease, f"SELECT count(*) FROM items WHERE name LIKE '{tag}' || '%%'") == 1
    pg_sandbox.checkin(owner)
    assert pg.committed(tag) == []


def test_an_inner_scope_keeps_its_own_baseline(pg_sandbox: Sandbox, tag: str) -> None:
    """A class scope inside a module scope: its tests and its end each restore their own."""
    connector = pg_sandbox._connectors[0]
    owner = pg_sandbox.checkout(connector=connector)  # type: ignore[arg-type]
    lease = pg_sandbox.lease(connector)  # type: ignore[arg-type]
    assert lease is not None
    module_id = insert(lease, f"{tag}module")
    inner = nested_scope(owner)
    assert inner is not None
    class_id = insert(lease, f"{tag}class")
    for n in range(2):
        test = nested_scope(owner)
        assert test is not None
        assert insert(lease, f"{tag}test{n}") == class_id + 1
        test.rollback()
    inner.rollback()
    assert insert(lease, f"{tag}after") == module_id + 1
    pg_sandbox.checkin(owner)


def test_a_baseline_is_reused_until_something_else_runs(pg_sandbox: Sandbox, tag: str) -> None:
    """Tests one after the other at one depth skip the snapshot; the ids stay right."""
    connector = pg_sandbox._connectors[0]
    owner = pg_sandbox.checkout(connector=connector)  # type: ignore[arg-type]
    lease = pg_sandbox.lease(connector)  # type: ignore[arg-type]
    assert lease is not None
    scope_id = insert(lease, f"{tag}scope")
    baseline: Baseline | None = None
    ids = []
    for n in range(3):
        nested = nested_scope(owner, baseline)
        assert nested is not None
        ids.append(insert(lease, f"{tag}{n}"))
        run(lease, "DEALLOCATE ALL")  # the app drops our prepared statements too
        baseline = nested.rollback()
        assert baseline is not None
    assert ids == [scope_id + 1] * 3
    # A fixture of the scope wrote in between: the caller passes no baseline.
    later_id = insert(lease, f"{tag}fixture")
    nested = nested_scope(owner, None)
    assert nested is not None
    assert insert(lease, f"{tag}after") == later_id + 1
    nested.rollback()
    pg_sandbox.checkin(owner)


def test_reset_sequences_off_keeps_counting(
    pg: Backend, make_sandbox: Callable[..., Sandbox], tag: str
) -> None:
    sandbox = make_sandbox(pg.url, reset_sequences=False)
    connector = pg.connector()
    sandbox.add_connector(connector)
    owner = sandbox.checkout(connector=connector)
    lease = sandbox.lease(connector)
    assert lease is not None
    ids = []
    for n in range(2):
        nested = nested_scope(owner)
        assert nested is not None
        ids.append(insert(lease, f"{tag}{n}"))
        nested.rollback()
    assert ids[1] == ids[0] + 1
    sandbox.checkin(owner)
