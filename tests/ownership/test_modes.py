"""Modes: manual refuses, auto hands out plain connections, shared lends one owner's."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sqlsandbox import ConfigError, OwnershipError
from sqlsandbox.ownership import Sandbox

from .conftest import Backend, insert, names
from .test_context import in_thread


def test_manual_mode_is_the_default_and_refuses_unowned_access(
    pg: Backend, pg_sandbox: Sandbox
) -> None:
    assert pg_sandbox.mode() == "manual"
    with pytest.raises(
        OwnershipError, match=r"thread 'MainThread' is not allowed: the sandbox is in manual mode"
    ):
        pg_sandbox.lease(pg.connector())


def test_auto_mode_gives_unowned_callers_plain_connections(
    pg: Backend, pg_sandbox: Sandbox
) -> None:
    assert pg_sandbox.mode("auto") == "auto"
    assert pg_sandbox.lease(pg.connector()) is None  # the driver uses its own pool: writes commit
    with pg_sandbox.checkout():
        assert pg_sandbox.lease(pg.connector()) is not None  # owners still get their sandbox
    pg_sandbox.mode("manual")
    with pytest.raises(OwnershipError):
        pg_sandbox.lease(pg.connector())


def test_shared_mode_lends_the_owner_connection_to_every_caller(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()
    owner = pg_sandbox.checkout(name="test_shared")
    pg_sandbox.mode("shared", owner)

    def worker(i: int) -> None:
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        insert(lease, f"{tag}{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lease = pg_sandbox.lease(connector)
    assert lease is not None
    assert names(lease, tag) == [f"{tag}{i}" for i in range(5)]
    pg_sandbox.checkin(owner)
    assert pg_sandbox.mode() == "manual"  # the shared owner ended
    assert pg.committed(tag) == []
    with pytest.raises(OwnershipError):
        in_thread(lambda: pg_sandbox.lease(connector))


def test_switching_to_shared_checks_in_the_other_owners(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()
    results: dict[str, Any] = {}
    other_ready, shared_set = threading.Event(), threading.Event()

    def other_owner() -> None:
        other = pg_sandbox.checkout(name="other")
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        insert(lease, tag + "other")
        other_ready.set()
        shared_set.wait()
        results["status"] = other.status
        try:
            insert(lease, tag + "again")
        except OwnershipError as exc:
            results["error"] = str(exc)

    thread = threading.Thread(target=other_owner)
    thread.start()
    other_ready.wait()
    owner = pg_sandbox.checkout(name="sharer")
    pg_sandbox.mode("shared", owner)
    shared_set.set()
    thread.join()
    assert results["status"] == "checked_in"
    assert "Owner 'other' checked in" in results["error"]
    assert [o.name for o in pg_sandbox.owners] == ["sharer"]
    pg_sandbox.checkin(owner)
    assert pg_sandbox.drain(timeout=10)
    assert pg.committed(tag) == []


def test_shared_mode_while_another_shared_owner_lives_is_refused(pg_sandbox: Sandbox) -> None:
    first = pg_sandbox.checkout(name="first")
    pg_sandbox.mode("shared", first)
    second = in_thread(lambda: pg_sandbox.checkout(name="second", lazy=True))
    with pytest.raises(OwnershipError, match=r"already shared with owner 'first'"):
        pg_sandbox.mode("shared", second)
    pg_sandbox.checkin(first)
    pg_sandbox.mode("shared", second)
    assert pg_sandbox.mode() == "shared"
    pg_sandbox.checkin(second)
    assert pg_sandbox.mode() == "manual"


def test_shared_mode_needs_an_owner_and_modes_are_validated(pg_sandbox: Sandbox) -> None:
    with pytest.raises(OwnershipError, match=r"Cannot set shared mode: owner not found"):
        pg_sandbox.mode("shared")
    with pytest.raises(ConfigError, match=r"Unknown sandbox mode 'sometimes'"):
        pg_sandbox.mode("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"shared mode needs an owner"):
        Sandbox(mode="shared")
