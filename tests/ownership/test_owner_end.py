"""An owner that ends without checking in is checked in by the sandbox."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading

import pytest

from sqlsandbox.ownership import Owner, Sandbox

from .adapters import AsyncpgConnector
from .conftest import Backend, insert, run


def collect_and_drain(sandbox: Sandbox) -> bool:
    """Collect garbage, then wait for the checkins of owners nothing refers to.

    Runs in a worker thread, so the event loop has moved on and no longer
    holds the finished task.
    """
    gc.collect()
    return sandbox.drain(10)


@pytest.mark.asyncio
async def test_a_task_that_ends_without_checkin_is_checked_in(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()

    async def forgetful() -> None:
        await pg_sandbox.acheckout(name="forgetful", connector=connector)
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        await asyncio.to_thread(insert, lease, tag + "x")

    task = asyncio.get_running_loop().create_task(forgetful(), context=contextvars.Context())
    await task
    del task
    assert await asyncio.to_thread(collect_and_drain, pg_sandbox)
    assert pg_sandbox.owners == []
    assert pg.committed(tag) == []
    with pg_sandbox.checkout(connector=connector):  # its connection went back to the pool
        lease = pg_sandbox.lease(connector)
        assert lease is not None and run(lease, "SELECT 1") == [(1,)]
    assert connector.opened == 1


@pytest.mark.asyncio
async def test_an_async_owner_connection_is_rolled_back_on_its_loop(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = AsyncpgConnector(pg.url)

    async def forgetful() -> None:
        await pg_sandbox.acheckout(name="forgetful-async", connector=connector)
        lease = await pg_sandbox.alease(connector)
        assert lease is not None
        await lease.aenter()
        await lease.raw.execute("INSERT INTO items (name) VALUES ($1)", tag + "y")
        lease.exit()

    task = asyncio.get_running_loop().create_task(forgetful(), context=contextvars.Context())
    await task
    del task
    assert await asyncio.to_thread(collect_and_drain, pg_sandbox)
    assert pg_sandbox.owners == []
    assert pg.committed(tag) == []
    async with await pg_sandbox.acheckout(connector=connector):
        lease = await pg_sandbox.alease(connector)
        assert lease is not None
        await lease.aenter()
        assert (
            await lease.raw.fetchval("SELECT count(*) FROM items WHERE name = $1", tag + "y") == 0
        )
        lease.exit()
    assert connector.opened == 1


def test_a_thread_that_ends_without_checkin_is_checked_in(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()

    def forgetful() -> None:
        pg_sandbox.checkout(name="thread-owner", connector=connector)
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        insert(lease, tag + "z")

    thread = threading.Thread(target=forgetful)
    thread.start()
    thread.join()
    del thread
    assert collect_and_drain(pg_sandbox)
    assert pg_sandbox.owners == []
    assert pg.committed(tag) == []


def test_a_handle_kept_by_the_caller_keeps_the_owner(pg: Backend, pg_sandbox: Sandbox) -> None:
    connector = pg.connector()
    holder: dict[str, Owner] = {}

    def checkout_elsewhere() -> None:
        holder["owner"] = pg_sandbox.checkout(name="kept", connector=connector)

    thread = threading.Thread(target=checkout_elsewhere)
    thread.start()
    thread.join()
    del thread
    assert collect_and_drain(pg_sandbox)
    assert [o.name for o in pg_sandbox.owners] == ["kept"]  # the thread ended, the handle lives
    with pg_sandbox.join(holder["owner"]):
        lease = pg_sandbox.lease(connector)
        assert lease is not None and run(lease, "SELECT 1") == [(1,)]
    del holder["owner"]
    assert collect_and_drain(pg_sandbox)
    assert pg_sandbox.owners == []
