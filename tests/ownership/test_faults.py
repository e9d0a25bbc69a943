"""Faults: the server kills the owner's backend mid-test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sqlsandbox import OwnershipError
from sqlsandbox.ownership import Sandbox

from .adapters import AsyncpgConnector
from .conftest import Backend, insert, names, run


def test_killed_backend_gives_a_clear_error_and_a_healthy_next_checkout(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()
    with pg_sandbox.checkout(name="test_killed", connector=connector):
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        insert(lease, tag + "a")
        [(pid,)] = run(lease, "SELECT pg_backend_pid()")
        assert pg.plain("SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
        with pytest.raises(
            OwnershipError,
            match=r"connection of owner 'test_killed' was lost: .*(?i:terminat|closed)",
        ) as info:
            insert(lease, tag + "b")
        assert "next checkout" in str(info.value)
        assert info.value.__cause__ is not None  # the driver's error is kept as the cause
        with pytest.raises(OwnershipError, match=r"was lost"):
            run(lease, "SELECT 1")
    with pg_sandbox.checkout(connector=connector):
        fresh = pg_sandbox.lease(connector)
        assert fresh is not None
        assert names(fresh, tag) == []
        [(new_pid,)] = run(fresh, "SELECT pg_backend_pid()")
        assert new_pid != pid
    assert pg.committed(tag) == []


@pytest.mark.asyncio
async def test_killed_asyncpg_backend(pg: Backend, make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(pg.url)
    connector = AsyncpgConnector(pg.url)
    async with await sandbox.acheckout(name="test_killed_async", connector=connector):
        lease = await sandbox.alease(connector)
        assert lease is not None
        await lease.aenter()
        pid = await lease.raw.fetchval("SELECT pg_backend_pid()")
        lease.exit()
        pg.plain("SELECT pg_terminate_backend(%s)", (pid,))
        await lease.aenter()
        with pytest.raises(OwnershipError, match=r"'test_killed_async' was lost"):
            try:
                await lease.raw.fetchval("SELECT 1")
            except BaseException as exc:
                lease.exit_with(exc)
                raise
    async with await sandbox.acheckout(connector=connector):
        lease = await sandbox.alease(connector)
        assert lease is not None
        await lease.aenter()
        assert await lease.raw.fetchval("SELECT pg_backend_pid()") != pid
        lease.exit()


def test_an_idle_connection_killed_between_owners_is_replaced_at_checkout(
    pg: Backend, pg_sandbox: Sandbox
) -> None:
    connector = pg.connector()
    with pg_sandbox.checkout(connector=connector):
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        [(pid,)] = run(lease, "SELECT pg_backend_pid()")
    pg.plain("SELECT pg_terminate_backend(%s)", (pid,))
    with pg_sandbox.checkout(connector=connector):  # BEGIN fails, a fresh connection takes over
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        assert run(lease, "SELECT 1") == [(1,)]
    assert connector.opened == 2
