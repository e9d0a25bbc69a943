"""Many tasks and threads on one owner's connection take turns instead of corrupting it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from sqlsandbox import OwnershipError
from sqlsandbox.ownership import Sandbox

from .adapters import AsyncpgConnector
from .conftest import Backend, insert, names, run


@pytest.mark.asyncio
async def test_fifty_tasks_share_one_asyncpg_connection(
    pg: Backend, make_sandbox: Callable[..., Sandbox], tag: str
) -> None:
    sandbox = make_sandbox(pg.url)
    connector = AsyncpgConnector(pg.url)
    await sandbox.acheckout(connector=connector)

    async def worker(i: int) -> int:
        lease = await sandbox.alease(connector)
        assert lease is not None
        await lease.abegin()
        for j in range(3):
            await lease.aenter()
            try:
                # Without turns asyncpg raises "another operation is in progress".
                await lease.raw.execute("INSERT INTO items (name) VALUES ($1)", f"{tag}{i}_{j}")
                await asyncio.sleep(0)  # let the other tasks try to cut in
            except BaseException as exc:
                lease.exit_with(exc)
                raise
            lease.exit(check=True)
        await lease.acommit()
        await lease.aenter()
        try:
            count = await lease.raw.fetchval(
                "SELECT count(*) FROM items WHERE name LIKE $1", tag + "%"
            )
        finally:
            lease.exit()
        return int(count)

    counts = await asyncio.gather(*(worker(i) for i in range(50)))
    assert max(counts) == 150
    await sandbox.acheckin()
    assert pg.committed(tag) == []
    assert connector.opened == 1


def test_threads_share_one_connection_on_every_backend(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    connector = backend.connector()
    owner = sandbox.checkout()
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def worker(i: int) -> None:
        try:
            start.wait()
            lease = sandbox.lease(connector)
            assert lease is not None
            for j in range(5):
                lease.begin()
                insert(lease, f"{tag}{i:02d}_{j}")
                lease.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        sandbox.allow(owner, t)
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lease = sandbox.lease(connector)
    assert lease is not None
    assert len(names(lease, tag)) == 60
    sandbox.checkin(owner)
    assert backend.committed(tag) == []


def test_a_wait_longer_than_the_queue_timeout_fails_clearly(
    pg: Backend, make_sandbox: Callable[..., Sandbox]
) -> None:
    sandbox = make_sandbox(pg.url, queue_timeout=0.2)
    connector = pg.connector()
    sandbox.add_connector(connector)
    owner = sandbox.checkout(name="test_queue")
    holding, release = threading.Event(), threading.Event()

    def hog() -> None:
        lease = sandbox.lease(connector)
        assert lease is not None
        lease.enter()
        holding.set()
        release.wait()
        lease.exit()

    thread = threading.Thread(target=hog, name="hog")
    sandbox.allow(owner, thread)
    thread.start()
    holding.wait()
    lease = sandbox.lease(connector)
    assert lease is not None
    with pytest.raises(
        OwnershipError,
        match=r"waited more than queue_timeout=0.2s for its turn on the connection of owner "
        r"'test_queue', which thread id \d+ is using",
    ):
        run(lease, "SELECT 1")
    release.set()
    thread.join()
    assert run(lease, "SELECT 1") == [(1,)]
    sandbox.checkin(owner)


@pytest.mark.asyncio
async def test_owner_ending_mid_query_in_another_task_discards_the_connection(
    pg: Backend, make_sandbox: Callable[..., Sandbox]
) -> None:
    sandbox = make_sandbox(pg.url)
    connector = AsyncpgConnector(pg.url)
    owner = await sandbox.acheckout(name="test_mid_query", connector=connector)
    in_query = asyncio.Event()

    async def slow_client() -> None:
        lease = await sandbox.alease(connector)
        assert lease is not None
        await lease.aenter()
        try:
            in_query.set()
            await lease.raw.fetch("SELECT pg_sleep(30)")
        except BaseException as exc:
            lease.exit_with(exc)
            raise
        lease.exit()

    client = asyncio.create_task(slow_client())
    await in_query.wait()
    await sandbox.acheckin(owner)
    with pytest.raises(
        OwnershipError,
        match=r"Owner 'test_mid_query' checked in \(its test ended\) while task .* was still "
        r"using its connection; the connection was discarded",
    ):
        await client
    async with await sandbox.acheckout(connector=connector):
        lease = await sandbox.alease(connector)
        assert lease is not None
        assert await lease.raw.fetchval("SELECT 1") == 1
    assert connector.opened == 2  # the interrupted connection was not reused


def test_owner_ending_mid_query_in_another_thread_discards_the_connection(
    pg: Backend, pg_sandbox: Sandbox
) -> None:
    connector = pg.connector()
    owner = pg_sandbox.checkout(name="test_mid_query_sync", connector=connector)
    in_query = threading.Event()
    outcome: list[BaseException] = []

    def slow_client() -> None:
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        lease.enter()
        try:
            in_query.set()
            lease.raw.execute("SELECT pg_sleep(30)")
        except BaseException as exc:
            try:
                lease.exit_with(exc)
            except BaseException as err:
                outcome.append(err)
            return
        lease.exit()

    thread = threading.Thread(target=slow_client)
    pg_sandbox.allow(owner, thread)
    thread.start()
    in_query.wait()
    pg_sandbox.checkin(owner)
    thread.join()
    assert len(outcome) == 1 and isinstance(outcome[0], OwnershipError)
    assert "checked in" in str(outcome[0]) and "discarded" in str(outcome[0])
    with pg_sandbox.checkout(connector=connector):
        lease = pg_sandbox.lease(connector)
        assert lease is not None and run(lease, "SELECT 1") == [(1,)]
    assert connector.opened == 2
