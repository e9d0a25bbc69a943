"""PyMySQL and aiomysql used directly by the app are routed through the sandbox (MariaDB)."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomysql
import pymysql
import pytest
import pytest_asyncio
from pymysql.cursors import DictCursor, SSCursor
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import sqlsandbox.mysql
from sqlsandbox import OwnershipError, Sandbox
from sqlsandbox._urls import DatabaseURL

INSERT = "INSERT INTO items (name) VALUES (%s)"
SELECT = "SELECT name FROM items WHERE name LIKE %s ORDER BY name"


def committed(url: DatabaseURL, tag: str) -> list[str]:
    """Names starting with *tag* that another client sees (SQLAlchemy's connects pass through)."""
    engine = create_engine(url.with_scheme("mysql+pymysql").render(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(SELECT.replace("%s", ":p")), {"p": tag + "%"})
            return list(rows.scalars())
    finally:
        engine.dispose()


@pytest.fixture
def kw(driver_maria_url: DatabaseURL) -> dict[str, Any]:
    """PyMySQL's connect arguments for the driver tests' database."""
    url = driver_maria_url
    return {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password or "",
        "database": url.database,
    }


@pytest.fixture
def akw(kw: dict[str, Any]) -> dict[str, Any]:
    """The same for aiomysql, which names the database ``db``."""
    return {**{k: v for k, v in kw.items() if k != "database"}, "db": kw["database"]}


@pytest.fixture
def sandbox(driver_maria_url: DatabaseURL) -> Iterator[Sandbox]:
    box = Sandbox(driver_maria_url, name="pymysql-direct")
    sqlsandbox.mysql.install(box)
    yield box
    sqlsandbox.mysql.uninstall(box)
    box.close()


@pytest_asyncio.fixture
async def asandbox(driver_maria_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_maria_url, name="aiomysql-direct")
    sqlsandbox.mysql.install(box)
    yield box
    sqlsandbox.mysql.uninstall(box)
    await box.aclose()


def names(conn: Any, tag: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(SELECT, (tag + "%",))
        return [row[0] for row in cur.fetchall()]


async def anames(conn: Any, tag: str) -> list[str]:
    async with conn.cursor() as cur:
        await cur.execute(SELECT, (tag + "%",))
        return [row[0] for row in await cur.fetchall()]


# -- PyMySQL ----------------------------------------------------------------------------


def test_commits_become_savepoints_and_vanish_after_checkin(
    sandbox: Sandbox, kw: dict[str, Any], driver_maria_url: DatabaseURL, tag: str
) -> None:
    with sandbox.checkout(name="test_commits"):
        conn = pymysql.connect(**kw)
        assert isinstance(conn, sqlsandbox.mysql.SandboxConnection)
        with conn.cursor() as cur:
            cur.execute(INSERT, (tag + "a",))
            assert cur.rowcount == 1
        conn.commit()
        with conn.cursor() as cur:
            cur.execute(INSERT, (tag + "b",))
        conn.commit()
        conn.close()
        with pytest.raises(pymysql.err.Error, match="Already closed"):
            conn.close()
        other = pymysql.connect(**kw)  # commit-then-read on a "new" connection
        assert names(other, tag) == [tag + "a", tag + "b"]
        assert committed(driver_maria_url, tag) == []  # nobody outside the test sees them
    assert committed(driver_maria_url, tag) == []
    with sandbox.checkout():
        assert names(pymysql.connect(**kw), tag) == []


def test_rollback_close_and_nested_transactions(
    sandbox: Sandbox, kw: dict[str, Any], tag: str
) -> None:
    with sandbox.checkout():
        conn = pymysql.connect(**kw)
        cur = conn.cursor()
        cur.execute(INSERT, (tag + "rolled",))
        conn.rollback()
        cur.execute(INSERT, (tag + "outer",))
        # A second connection of the same owner nests inside the first one's transaction.
        inner = pymysql.connect(**kw)
        inner.cursor().execute(INSERT, (tag + "inner",))
        inner.commit()
        assert names(conn, tag) == [tag + "inner", tag + "outer"]
        # The app's own savepoints work inside its transaction.
        cur.execute("SAVEPOINT app_sp")
        cur.execute(INSERT, (tag + "after-sp",))
        cur.execute("ROLLBACK TO SAVEPOINT app_sp")
        conn.rollback()  # undoes what happened since the outer transaction began
        assert names(conn, tag) == []
        # Closing (or leaving `with`) drops what was not committed, as PyMySQL does.
        with pymysql.connect(**kw) as dropped:
            dropped.cursor().execute(INSERT, (tag + "uncommitted",))
        assert not dropped.open
        assert names(conn, tag) == []


def test_begin_statements_and_autocommit(sandbox: Sandbox, kw: dict[str, Any], tag: str) -> None:
    with sandbox.checkout():
        conn = pymysql.connect(**kw, autocommit=True, cursorclass=DictCursor)
        assert conn.get_autocommit()
        cur = conn.cursor()
        assert cur.execute("BEGIN") == 0
        cur.execute(INSERT, (tag + "raw",))
        cur.execute("ROLLBACK")
        conn.begin()
        cur.execute(INSERT, (tag + "first",))
        conn.begin()  # MySQL commits the open transaction before starting another
        cur.execute(INSERT, (tag + "second",))
        conn.rollback()
        cur.execute(SELECT, (tag + "%",))
        assert cur.fetchall() == [{"name": tag + "first"}]
        # Autocommit statements keep the test's transaction usable after an error.
        with pytest.raises(pymysql.err.IntegrityError):
            cur.execute(INSERT, (tag + "first",))
        cur.execute(INSERT, (tag + "after-error",))
        # Turning autocommit on commits the app's open transaction, as on MySQL.
        conn.autocommit(False)
        cur.execute(INSERT, (tag + "pending",))
        conn.autocommit(True)
        conn.rollback()  # nothing left to roll back
        cur.execute("SELECT count(*) AS n FROM items WHERE name LIKE %s", (tag + "%",))
        assert cur.fetchone() == {"n": 3}


def test_ddl_is_refused_with_the_fix(sandbox: Sandbox, kw: dict[str, Any], tag: str) -> None:
    with sandbox.checkout():
        conn = pymysql.connect(**kw)
        cur = conn.cursor()
        cur.execute(INSERT, (tag + "kept",))
        with pytest.raises(
            OwnershipError,
            match=r"(?s)'CREATE TABLE' commits implicitly.*isolation=\"database\"",
        ):
            cur.execute("CREATE TABLE sqlsandbox_never (id int)")
        with pytest.raises(OwnershipError, match="'TRUNCATE' commits implicitly"):
            cur.execute("TRUNCATE items")
        cur.execute("CREATE TEMPORARY TABLE scratch (id int)")  # no implicit commit
        cur.execute("DROP TEMPORARY TABLE scratch")
        assert names(conn, tag) == [tag + "kept"]  # the test's transaction is intact


def test_unbuffered_cursor_and_select_db(sandbox: Sandbox, kw: dict[str, Any], tag: str) -> None:
    with sandbox.checkout():
        conn = pymysql.connect(**kw)
        cur = conn.cursor()
        cur.executemany(INSERT, [(f"{tag}{i:02d}",) for i in range(12)])
        with conn.cursor(SSCursor) as stream:
            stream.execute(SELECT, (tag + "%",))
            assert stream.fetchone() == (tag + "00",)
            assert len(stream.fetchmany(5)) == 5
            assert [row[0] for row in stream] == [f"{tag}{i:02d}" for i in range(6, 12)]
        conn.select_db(kw["database"])  # the routed database: nothing to do
        with pytest.raises(pymysql.err.NotSupportedError, match=r"select_db\('mysql'\)"):
            conn.select_db("mysql")
        conn.ping()
        assert len(names(conn, tag)) == 12
        deferred = pymysql.connect(**kw, defer_connect=True)
        deferred.connect()  # the owner's connection is open already: nothing to do
        assert names(deferred, tag) == names(conn, tag)


def test_unowned_threads_and_other_owners_get_ownership_error(
    sandbox: Sandbox, kw: dict[str, Any]
) -> None:
    outcome: list[BaseException] = []

    def run(fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:
            outcome.append(exc)

    with sandbox.checkout(name="test_unowned"):
        conn = pymysql.connect(**kw)
        for target in (lambda: pymysql.connect(**kw), lambda: names(conn, "x")):
            thread = threading.Thread(target=run, args=(target,), name="intruder")
            thread.start()
            thread.join()
        assert [type(e) for e in outcome] == [OwnershipError, OwnershipError]
        assert all("thread 'intruder' is not allowed" in str(e) for e in outcome)

        def second_owner() -> None:
            with sandbox.checkout(name="second"):
                names(conn, "x")

        thread = threading.Thread(target=run, args=(second_owner,))
        thread.start()
        thread.join()
        assert isinstance(outcome[-1], OwnershipError)
        assert "connection of owner 'test_unowned'" in str(outcome[-1])
        assert "runs as owner 'second'" in str(outcome[-1])
        assert names(conn, "x") == []


def test_allowed_threads_take_turns(
    sandbox: Sandbox, kw: dict[str, Any], driver_maria_url: DatabaseURL, tag: str
) -> None:
    owner = sandbox.checkout()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(5):
                conn = pymysql.connect(**kw)
                conn.cursor().execute(INSERT, (f"{tag}{i:02d}_{j}",))
                conn.commit()
                conn.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        sandbox.allow(owner, t)
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(names(pymysql.connect(**kw), tag)) == 30
    sandbox.checkin(owner)
    assert committed(driver_maria_url, tag) == []


def test_other_databases_and_sqlalchemy_pass_through(
    sandbox: Sandbox, kw: dict[str, Any], driver_maria_url: DatabaseURL
) -> None:
    conn = pymysql.connect(**{**kw, "database": "mysql"})  # no owner needed, no proxy
    try:
        assert type(conn) is pymysql.connections.Connection
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone() == ("mysql",)
    finally:
        conn.close()
    engine = create_engine(
        driver_maria_url.with_scheme("mysql+pymysql").render(), poolclass=NullPool
    )
    try:
        with engine.connect() as sa_conn:  # SQLAlchemy's connects are left to sqlsandbox.sqlalchemy
            assert type(sa_conn.connection.dbapi_connection) is pymysql.connections.Connection
    finally:
        engine.dispose()


def test_unboxed_code_gets_a_plain_connection_whose_writes_commit(
    sandbox: Sandbox, kw: dict[str, Any], driver_maria_url: DatabaseURL, tag: str
) -> None:
    with sandbox.unboxed():
        conn = pymysql.connect(**kw, autocommit=True)
        try:
            assert type(conn) is pymysql.connections.Connection
            conn.cursor().execute(INSERT, (tag + "real",))
            assert committed(driver_maria_url, tag) == [tag + "real"]
            conn.cursor().execute("DELETE FROM items WHERE name LIKE %s", (tag + "%",))
        finally:
            conn.close()


def test_uninstall_restores_the_drivers(driver_maria_url: DatabaseURL, kw: dict[str, Any]) -> None:
    app = types.ModuleType("fake_mysql_app")
    app.aconnect = aiomysql.connect  # type: ignore[attr-defined]  # `from aiomysql import connect`
    sys.modules["fake_mysql_app"] = app
    originals = (aiomysql.connect, aiomysql.create_pool)
    box = Sandbox(driver_maria_url)
    try:
        sqlsandbox.mysql.install(box)
        assert sqlsandbox.mysql.is_installed(box)
        assert app.aconnect is aiomysql.connect is not originals[0]
        with box.checkout():
            assert isinstance(pymysql.connect(**kw), sqlsandbox.mysql.SandboxConnection)
        sqlsandbox.mysql.uninstall(box)
        assert (aiomysql.connect, aiomysql.create_pool) == originals
        assert app.aconnect is originals[0]
        conn = pymysql.connect(**kw)  # no owner, no route: PyMySQL's own connection
        assert type(conn) is pymysql.connections.Connection
        assert names(conn, "x") == []
        conn.close()
    finally:
        del sys.modules["fake_mysql_app"]
        sqlsandbox.mysql.uninstall(box)
        box.close()


# -- aiomysql ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_commits_rollbacks_and_closes(
    asandbox: Sandbox, akw: dict[str, Any], driver_maria_url: DatabaseURL, tag: str
) -> None:
    async with await asandbox.acheckout():
        async with aiomysql.connect(**akw) as conn:
            assert isinstance(conn, sqlsandbox.mysql.AsyncSandboxConnection)
            async with conn.cursor() as cur:
                await cur.execute(INSERT, (tag + "a",))
                await conn.commit()
                await cur.execute(INSERT, (tag + "rolled",))
                await conn.rollback()
                await conn.begin()
                await cur.execute(INSERT, (tag + "b",))
                assert conn.get_transaction_status()
            await conn.commit()
        assert conn.closed
        # A synchronous close() of an open transaction rolls it back before anything else.
        left = await aiomysql.connect(**akw)
        await (await left.cursor()).execute(INSERT, (tag + "left-open",))
        left.close()
        other = await aiomysql.connect(**akw, autocommit=True)
        assert await anames(other, tag) == [tag + "a", tag + "b"]
        with pytest.raises(pymysql.err.IntegrityError):
            await (await other.cursor()).execute(INSERT, (tag + "a",))
        with pytest.raises(OwnershipError, match="'ALTER TABLE' commits implicitly"):
            await (await other.cursor()).execute("ALTER TABLE items ADD COLUMN x int")
        await other.ensure_closed()
        assert committed(driver_maria_url, tag) == []
    assert committed(driver_maria_url, tag) == []


@pytest.mark.asyncio
async def test_pool_acquire_from_tasks_of_one_owner_takes_turns(
    asandbox: Sandbox, akw: dict[str, Any], driver_maria_url: DatabaseURL, tag: str
) -> None:
    pool = await aiomysql.create_pool(minsize=2, maxsize=4, **akw)
    assert isinstance(pool, sqlsandbox.mysql.SandboxPool)
    async with await asandbox.acheckout():

        async def worker(i: int) -> None:
            async with pool.acquire() as conn:
                cur = await conn.cursor()
                for j in range(3):
                    await cur.execute(INSERT, (f"{tag}{i:02d}_{j}",))
                    await asyncio.sleep(0)  # let the other tasks try to cut in
                await conn.commit()

        await asyncio.gather(*(worker(i) for i in range(10)))
        async with pool.acquire() as conn:
            assert len(await anames(conn, tag)) == 30

        async def outsider() -> None:
            async with pool.acquire():
                pass

        with pytest.raises(OwnershipError, match="is not allowed"):
            await asyncio.get_running_loop().create_task(outsider(), context=contextvars.Context())
        # An acquired connection released with its transaction open is rolled back.
        conn = await pool.acquire()
        await (await conn.cursor()).execute(INSERT, (tag + "released-open",))
        pool.release(conn)  # not awaited, as aiomysql allows
        async with pool.acquire() as fresh:
            assert len(await anames(fresh, tag)) == 30
        pool.close()
        await pool.wait_closed()
        with pytest.raises(RuntimeError, match="after closing pool"):
            await pool.acquire()
    assert committed(driver_maria_url, tag) == []


@pytest.mark.asyncio
async def test_async_unbuffered_cursor_and_other_databases(
    asandbox: Sandbox, akw: dict[str, Any], tag: str
) -> None:
    async with await asandbox.acheckout():
        conn = await aiomysql.connect(**akw)
        cur = await conn.cursor()
        await cur.executemany(INSERT, [(f"{tag}{i:02d}",) for i in range(8)])
        async with conn.cursor(aiomysql.SSCursor) as stream:
            await stream.execute(SELECT, (tag + "%",))
            rows = [row[0] async for row in stream]
        assert rows == [f"{tag}{i:02d}" for i in range(8)]
        conn.close()
    plain = await aiomysql.connect(**{**akw, "db": "mysql"})
    try:
        assert type(plain) is aiomysql.Connection
    finally:
        plain.close()


def test_sync_test_driving_an_async_app_on_other_loops(
    driver_maria_url: DatabaseURL, akw: dict[str, Any], tag: str
) -> None:
    """What Starlette's TestClient does: each request on a new loop in another thread."""
    box = Sandbox(driver_maria_url, name="aiomysql-host-loop")
    sqlsandbox.mysql.install(box)
    try:

        async def request(name: str) -> list[str]:
            async with aiomysql.connect(**akw) as conn:
                async with conn.cursor() as cur:
                    await cur.execute(INSERT, (name,))
                await conn.commit()
                return await anames(conn, tag)

        def serve(name: str) -> list[str]:
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
        assert committed(driver_maria_url, tag) == []
    finally:
        sqlsandbox.mysql.uninstall(box)
        box.close()


# -- overlapping transactions of one owner (the twin of test_overlapping_direct.py) ----
# Two connections an app opens are two leases of the owner's one connection, and a
# transaction that only read rolls back like a commit, keeping what the other committed.


def test_pymysql_a_reading_transaction_keeps_another_connections_commit(
    sandbox: Sandbox, kw: dict[str, Any], tag: str
) -> None:
    with sandbox.checkout():
        test_conn = pymysql.connect(**kw)
        assert names(test_conn, tag) == []  # PyMySQL opened a transaction
        app_conn = pymysql.connect(**kw)
        with app_conn.cursor() as cur:
            cur.execute(INSERT, (tag + "posted",))
        app_conn.commit()
        app_conn.close()
        test_conn.rollback()
        assert names(test_conn, tag) == [tag + "posted"]
        test_conn.close()


def test_pymysql_a_writing_transaction_still_undoes_what_landed_in_its_span(
    sandbox: Sandbox, kw: dict[str, Any], tag: str
) -> None:
    with sandbox.checkout():
        test_conn = pymysql.connect(**kw)
        with test_conn.cursor() as cur:
            cur.execute(INSERT, (tag + "own",))
        app_conn = pymysql.connect(**kw)
        with app_conn.cursor() as cur:
            cur.execute(INSERT, (tag + "posted",))
        app_conn.commit()
        test_conn.rollback()  # its savepoint is older than the app's commit
        assert names(app_conn, tag) == []
        app_conn.close()
        test_conn.close()


@pytest.mark.asyncio
async def test_aiomysql_a_reading_transaction_keeps_another_connections_commit(
    asandbox: Sandbox, kw: dict[str, Any], tag: str
) -> None:
    akw = {**{k: v for k, v in kw.items() if k != "database"}, "db": kw["database"]}
    async with await asandbox.acheckout():
        test_conn = await aiomysql.connect(**akw)
        assert await anames(test_conn, tag) == []
        async with aiomysql.connect(**akw) as app_conn:
            async with app_conn.cursor() as cur:
                await cur.execute(INSERT, (tag + "posted",))
            await app_conn.commit()
        await test_conn.rollback()
        assert await anames(test_conn, tag) == [tag + "posted"]
        await test_conn.ensure_closed()
