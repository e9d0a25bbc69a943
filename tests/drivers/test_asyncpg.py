"""asyncpg used directly by the app (connect, create_pool) is routed through the sandbox."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest
import pytest_asyncio

import sqlsandbox.asyncpg
from sqlsandbox import OwnershipError, Sandbox
from sqlsandbox._urls import DatabaseURL


def committed(url: DatabaseURL, tag: str) -> list[str]:
    """Names starting with *tag* that another client sees, read with bare libpq."""
    pgconn = psycopg.pq.PGconn.connect(url.with_scheme("postgresql").render().encode())
    try:
        res = pgconn.exec_params(
            b"SELECT name FROM items WHERE name LIKE $1 ORDER BY name", [(tag + "%").encode()]
        )
        return [res.get_value(i, 0).decode() for i in range(res.ntuples)]  # type: ignore[union-attr]
    finally:
        pgconn.finish()


@pytest.fixture
def dsn(driver_pg_url: DatabaseURL) -> str:
    return driver_pg_url.with_scheme("postgresql").render()


@pytest_asyncio.fixture
async def sandbox(driver_pg_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_pg_url, name="asyncpg-direct")
    sqlsandbox.asyncpg.install(box)
    yield box
    sqlsandbox.asyncpg.uninstall(box)
    await box.aclose()


async def names(conn: asyncpg.Connection, tag: str) -> list[str]:
    rows = await conn.fetch("SELECT name FROM items WHERE name LIKE $1 ORDER BY name", tag + "%")
    return [r["name"] for r in rows]


@pytest.mark.asyncio
async def test_app_commits_become_savepoints_and_vanish_after_checkin(
    sandbox: Sandbox, dsn: str, driver_pg_url: DatabaseURL, tag: str
) -> None:
    async with await sandbox.acheckout(name="test_commits"):
        conn = await asyncpg.connect(dsn)
        await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "autocommit")
        async with conn.transaction():
            await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "tx")
        await conn.close()
        other = await asyncpg.connect(dsn)  # commit-then-read on a "new" connection
        assert await names(other, tag) == [tag + "autocommit", tag + "tx"]
        await other.close()
        assert committed(driver_pg_url, tag) == []  # nobody outside the test sees them
    assert committed(driver_pg_url, tag) == []
    async with await sandbox.acheckout():
        conn = await asyncpg.connect(dsn)
        assert await names(conn, tag) == []


@pytest.mark.asyncio
async def test_nested_transactions_and_an_inner_rollback(
    sandbox: Sandbox, dsn: str, tag: str
) -> None:
    async with await sandbox.acheckout():
        conn = await asyncpg.connect(dsn)
        async with conn.transaction():
            await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "outer")
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "inner")
                    assert conn.is_in_transaction()
                    raise ZeroDivisionError
            async with conn.transaction():
                await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "inner2")
            assert await names(conn, tag) == [tag + "inner2", tag + "outer"]
        assert not conn.is_in_transaction()
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "rolled")
        await tx.rollback()
        with pytest.raises(asyncpg.InterfaceError, match="cannot commit; the transaction is"):
            await tx.commit()
        assert await names(conn, tag) == [tag + "inner2", tag + "outer"]


@pytest.mark.asyncio
async def test_raw_begin_and_rollback_statements_map_to_a_savepoint(
    sandbox: Sandbox, dsn: str, tag: str
) -> None:
    async with await sandbox.acheckout():
        conn = await asyncpg.connect(dsn)
        assert await conn.execute("BEGIN") == "BEGIN"
        await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "raw")
        assert await conn.execute("ROLLBACK") == "ROLLBACK"
        assert await names(conn, tag) == []
        await conn.execute("begin")
        await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "kept")
        await conn.execute("COMMIT")
        assert await names(conn, tag) == [tag + "kept"]


@pytest.mark.asyncio
async def test_a_failing_statement_does_not_poison_the_test_transaction(
    sandbox: Sandbox, dsn: str, tag: str
) -> None:
    async with await sandbox.acheckout():
        conn = await asyncpg.connect(dsn)
        await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "a")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "a")
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.fetch("SELECT * FROM no_such_table")
        await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "b")
        assert await names(conn, tag) == [tag + "a", tag + "b"]
        # Inside an app transaction the failure aborts that transaction only.
        async with conn.transaction():
            await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "c")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "d")
                await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "a")
        assert await names(conn, tag) == [tag + "a", tag + "b", tag + "c"]


@pytest.mark.asyncio
async def test_pool_acquire_from_many_tasks_of_one_owner_takes_turns(
    sandbox: Sandbox, dsn: str, driver_pg_url: DatabaseURL, tag: str
) -> None:
    inits: list[object] = []
    setups: list[object] = []

    async def init(conn: object) -> None:
        inits.append(conn)

    async def setup(conn: object) -> None:
        setups.append(conn)

    async with await sandbox.acheckout():
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4, init=init, setup=setup)
        assert isinstance(pool, sqlsandbox.asyncpg.SandboxPool)

        async def worker(i: int) -> None:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    for j in range(3):
                        await conn.execute("INSERT INTO items (name) VALUES ($1)", f"{tag}{i}_{j}")
                        await asyncio.sleep(0)  # let the other tasks try to cut in
                await conn.fetchval("SELECT count(*) FROM items")

        await asyncio.gather(*(worker(i) for i in range(25)))
        assert await pool.fetchval("SELECT count(*) FROM items WHERE name LIKE $1", tag + "%") == 75
        assert len(inits) == 1 and len(setups) == 26  # init once per owner connection
        await pool.close()  # harmless: the owner keeps its connection
        with pytest.raises(asyncpg.InterfaceError, match="pool is closing"):
            await pool.acquire()
        again = await asyncpg.connect(dsn)
        assert (
            await again.fetchval("SELECT count(*) FROM items WHERE name LIKE $1", tag + "%") == 75
        )
    assert committed(driver_pg_url, tag) == []


@pytest.mark.asyncio
async def test_released_connection_rolls_back_and_refuses_use(
    sandbox: Sandbox, dsn: str, tag: str
) -> None:
    async with await sandbox.acheckout():
        pool = await asyncpg.create_pool(dsn)
        conn = await pool.acquire()
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "left-open")
        await pool.release(conn)
        with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):
            await conn.fetchval("SELECT 1")
        async with pool.acquire() as fresh:
            assert await names(fresh, tag) == []
            assert not fresh.is_in_transaction()


@pytest.mark.asyncio
async def test_an_unowned_task_gets_ownership_error(sandbox: Sandbox, dsn: str) -> None:
    async with await sandbox.acheckout(name="test_unowned"):
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT 1") == 1
        outside = contextvars.Context()  # what a task started by a foreign callback has
        with pytest.raises(OwnershipError, match=r"Database access by task .* is not allowed"):
            await asyncio.get_running_loop().create_task(asyncpg.connect(dsn), context=outside)

        async def use_it() -> object:
            return await conn.fetchval("SELECT 1")

        with pytest.raises(OwnershipError, match=r"(?s)is not allowed.*sandbox.allow"):
            await asyncio.get_running_loop().create_task(use_it(), context=outside)
        # A task of the owner inherits it; an allowed one may use the connection.
        assert await asyncio.create_task(use_it()) == 1
        owner = sandbox.current_owner()
        task = asyncio.get_running_loop().create_task(use_it(), context=contextvars.Context())
        sandbox.allow(owner, task)
        assert await task == 1


@pytest.mark.asyncio
async def test_another_owner_cannot_use_the_connection(sandbox: Sandbox, dsn: str) -> None:
    async with await sandbox.acheckout(name="first"):
        conn = await asyncpg.connect(dsn)

        async def second_owner() -> None:
            async with await sandbox.acheckout(name="second"):
                await conn.fetchval("SELECT 1")

        with pytest.raises(
            OwnershipError, match=r"connection of owner 'first'.*runs as owner 'second'"
        ):
            await asyncio.get_running_loop().create_task(
                second_owner(), context=contextvars.Context()
            )


@pytest.mark.asyncio
async def test_other_databases_pass_through(
    sandbox: Sandbox, postgres_admin_url: DatabaseURL
) -> None:
    conn = await asyncpg.connect(postgres_admin_url.with_scheme("postgresql").render())
    try:
        assert type(conn) is asyncpg.Connection  # no owner needed, no proxy
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        postgres_admin_url.with_scheme("postgresql").render(), min_size=1, max_size=1
    )
    assert type(pool) is asyncpg.Pool
    await pool.close()


@pytest.mark.asyncio
async def test_unboxed_code_gets_a_plain_connection_whose_writes_commit(
    sandbox: Sandbox, dsn: str, driver_pg_url: DatabaseURL, tag: str
) -> None:
    with sandbox.unboxed():
        conn = await asyncpg.connect(dsn)
        try:
            assert type(conn) is asyncpg.Connection
            await conn.execute("INSERT INTO items (name) VALUES ($1)", tag + "real")
            assert committed(driver_pg_url, tag) == [tag + "real"]
            await conn.execute("DELETE FROM items WHERE name LIKE $1", tag + "%")
        finally:
            await conn.close()


@pytest.mark.asyncio
async def test_uninstall_restores_the_originals(driver_pg_url: DatabaseURL) -> None:
    original_connect, original_pool = asyncpg.connect, asyncpg.create_pool
    box = Sandbox(driver_pg_url)
    sqlsandbox.asyncpg.install(box)
    try:
        assert asyncpg.connect is not original_connect
        assert globals()["asyncpg"].create_pool is not original_pool
        assert sqlsandbox.asyncpg.is_installed(box)
    finally:
        sqlsandbox.asyncpg.uninstall(box)
        await box.aclose()
    assert asyncpg.connect is original_connect and asyncpg.create_pool is original_pool
    assert not sqlsandbox.asyncpg.is_installed()
    conn = await asyncpg.connect(driver_pg_url.with_scheme("postgresql").render())
    assert type(conn) is asyncpg.Connection
    await conn.close()


@pytest.mark.asyncio
async def test_prepared_statements_and_cursors_take_turns(
    sandbox: Sandbox, dsn: str, tag: str
) -> None:
    async with await sandbox.acheckout():
        conn = await asyncpg.connect(dsn)
        await conn.executemany(
            "INSERT INTO items (name) VALUES ($1)", [(f"{tag}{i:03d}",) for i in range(120)]
        )
        stmt = await conn.prepare("SELECT count(*) FROM items WHERE name LIKE $1")
        assert await stmt.fetchval(tag + "%") == 120
        async with conn.transaction():
            seen = [
                r["name"]
                async for r in conn.cursor(
                    "SELECT name FROM items WHERE name LIKE $1 ORDER BY name",
                    tag + "%",
                    prefetch=50,
                )
            ]
            cursor = await conn.cursor("SELECT name FROM items WHERE name LIKE $1", tag + "%")
            assert len(await cursor.fetch(7)) == 7
        assert len(seen) == 120 and seen[0] == f"{tag}000"


def test_sync_test_driving_an_async_app_on_other_loops(
    driver_pg_url: DatabaseURL, dsn: str, tag: str
) -> None:
    """What Starlette's TestClient does: each request on a new loop in another thread."""
    box = Sandbox(driver_pg_url, name="asyncpg-host-loop")
    sqlsandbox.asyncpg.install(box)
    try:
        pool = asyncpg.create_pool(dsn)  # made at import time, outside any owner

        async def request(name: str) -> list[str]:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO items (name) VALUES ($1)", name)
                return await names(conn, tag)

        def serve(name: str) -> list[str]:
            # A portal thread runs the app in a copy of the test's context.
            result: list[list[str]] = []
            context = contextvars.copy_context()
            thread = threading.Thread(
                target=lambda: result.append(context.run(asyncio.run, request(name)))
            )
            thread.start()
            thread.join()
            return result[0]

        with box.checkout(lazy=True):
            assert serve(tag + "first") == [tag + "first"]
            assert serve(tag + "second") == [tag + "first", tag + "second"]
        assert committed(driver_pg_url, tag) == []
    finally:
        sqlsandbox.asyncpg.uninstall(box)
        box.close()
