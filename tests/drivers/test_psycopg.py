"""psycopg 3 used directly by the app (sync, async, psycopg_pool) is routed through the sandbox."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import psycopg
import psycopg_pool
import pytest
import pytest_asyncio
from psycopg.rows import dict_row

import sqlsandbox.psycopg
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


@pytest.fixture
def sandbox(driver_pg_url: DatabaseURL) -> Iterator[Sandbox]:
    box = Sandbox(driver_pg_url, name="psycopg-direct")
    sqlsandbox.psycopg.install(box)
    yield box
    sqlsandbox.psycopg.uninstall(box)
    box.close()


@pytest_asyncio.fixture
async def asandbox(driver_pg_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_pg_url, name="psycopg-async-direct")
    sqlsandbox.psycopg.install(box)
    yield box
    sqlsandbox.psycopg.uninstall(box)
    await box.aclose()


def names(conn: psycopg.Connection, tag: str) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM items WHERE name LIKE %s ORDER BY name", (tag + "%",)
    ).fetchall()
    return [r[0] for r in rows]


INSERT = "INSERT INTO items (name) VALUES (%s)"


# -- blocking ---------------------------------------------------------------------------


def test_app_commits_become_savepoints_and_vanish_after_checkin(
    sandbox: Sandbox, dsn: str, driver_pg_url: DatabaseURL, tag: str
) -> None:
    with sandbox.checkout(name="test_commits"):
        with psycopg.connect(dsn) as conn:
            conn.execute(INSERT, (tag + "a",))
            conn.commit()
            conn.execute(INSERT, (tag + "b",))  # committed by leaving `with conn`
        assert conn.closed
        with psycopg.connect(dsn) as other:  # commit-then-read on a "new" connection
            assert names(other, tag) == [tag + "a", tag + "b"]
        assert committed(driver_pg_url, tag) == []
    assert committed(driver_pg_url, tag) == []
    with sandbox.checkout(), psycopg.connect(dsn) as conn:
        assert names(conn, tag) == []


def test_rollback_and_nested_transaction_blocks(sandbox: Sandbox, dsn: str, tag: str) -> None:
    with sandbox.checkout(), psycopg.connect(dsn) as conn:
        conn.execute(INSERT, (tag + "rolled",))
        conn.rollback()
        with conn.transaction():
            conn.execute(INSERT, (tag + "outer",))
            with pytest.raises(ZeroDivisionError), conn.transaction():
                conn.execute(INSERT, (tag + "inner",))
                raise ZeroDivisionError
            with conn.transaction() as tx:
                conn.execute(INSERT, (tag + "rollback-exc",))
                raise psycopg.Rollback(tx)  # swallowed by its own block
            with pytest.raises(psycopg.ProgrammingError, match="Explicit commit"):
                conn.commit()
            with conn.transaction(force_rollback=True):
                conn.execute(INSERT, (tag + "forced",))
        assert names(conn, tag) == [tag + "outer"]


def test_autocommit_failing_statement_does_not_poison_the_test_transaction(
    sandbox: Sandbox, dsn: str, tag: str
) -> None:
    with sandbox.checkout(), psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSERT, (tag + "a",))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(INSERT, (tag + "a",))
        conn.execute(INSERT, (tag + "b",))
        assert names(conn, tag) == [tag + "a", tag + "b"]


def test_failing_statement_in_app_transaction_behaves_like_psycopg(
    sandbox: Sandbox, dsn: str, tag: str
) -> None:
    with sandbox.checkout(), psycopg.connect(dsn) as conn:
        conn.execute(INSERT, (tag + "a",))
        conn.commit()
        conn.execute(INSERT, (tag + "b",))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(INSERT, (tag + "a",))
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()  # undoes the app's transaction only
        assert names(conn, tag) == [tag + "a"]


def test_raw_transaction_statements_and_row_factory(sandbox: Sandbox, dsn: str, tag: str) -> None:
    with sandbox.checkout(), psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("BEGIN")
        conn.execute(INSERT, (tag + "raw",))
        conn.execute("ROLLBACK")
        row = conn.execute("SELECT count(*) AS n FROM items WHERE name LIKE %s", (tag + "%",))
        assert row.fetchone() == {"n": 0}
        with conn.cursor("named") as cur:  # a server-side cursor inside the test's transaction
            cur.execute("SELECT generate_series(1, 5) AS i")
            assert [r["i"] for r in cur] == [1, 2, 3, 4, 5]


def test_sync_pool_shared_by_allowed_threads(
    sandbox: Sandbox, dsn: str, driver_pg_url: DatabaseURL, tag: str
) -> None:
    configured: list[object] = []
    pool = psycopg_pool.ConnectionPool(dsn, min_size=4, configure=configured.append)
    owner = sandbox.checkout()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(5):
                with pool.connection() as conn:
                    conn.execute(INSERT, (f"{tag}{i:02d}_{j}",))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        sandbox.allow(owner, t)
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pool.connection() as conn:
        assert len(names(conn, tag)) == 40
    assert len(configured) == 1
    pool.close()  # harmless
    with pool.connection() as conn:
        assert len(names(conn, tag)) == 40
    sandbox.checkin(owner)
    assert committed(driver_pg_url, tag) == []


def test_an_unowned_thread_gets_ownership_error(sandbox: Sandbox, dsn: str) -> None:
    outcome: list[BaseException] = []

    def run(fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:
            outcome.append(exc)

    with sandbox.checkout(name="test_unowned"), psycopg.connect(dsn) as conn:
        for target in (lambda: psycopg.connect(dsn), lambda: conn.execute("SELECT 1")):
            thread = threading.Thread(target=run, args=(target,), name="intruder")
            thread.start()
            thread.join()
        assert [type(e) for e in outcome] == [OwnershipError, OwnershipError]
        assert all("thread 'intruder' is not allowed" in str(e) for e in outcome)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_other_databases_pass_through(sandbox: Sandbox, postgres_admin_url: DatabaseURL) -> None:
    admin = postgres_admin_url.with_scheme("postgresql").render()
    with psycopg.connect(admin) as conn:
        assert type(conn) is psycopg.Connection
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pool = psycopg_pool.ConnectionPool(admin, min_size=1, open=False)
    assert not hasattr(pool, "_sqlsandbox_routed")
    with pool:
        with pool.connection() as conn:
            assert type(conn) is psycopg.Connection


def test_uninstall_restores_the_originals(driver_pg_url: DatabaseURL) -> None:
    originals = (
        psycopg.connect,
        psycopg.Connection.__dict__["connect"],
        psycopg.AsyncConnection.__dict__["connect"],
        psycopg_pool.ConnectionPool.__dict__["__init__"],
        psycopg_pool.AsyncConnectionPool.__dict__["__init__"],
    )
    box = Sandbox(driver_pg_url)
    sqlsandbox.psycopg.install(box)
    try:
        assert psycopg.connect is not originals[0]
        assert sqlsandbox.psycopg.is_installed(box)
    finally:
        sqlsandbox.psycopg.uninstall(box)
        box.close()
    assert (
        psycopg.connect,
        psycopg.Connection.__dict__["connect"],
        psycopg.AsyncConnection.__dict__["connect"],
        psycopg_pool.ConnectionPool.__dict__["__init__"],
        psycopg_pool.AsyncConnectionPool.__dict__["__init__"],
    ) == originals
    with psycopg.connect(driver_pg_url.with_scheme("postgresql").render()) as conn:
        assert type(conn) is psycopg.Connection


# -- asyncio ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_commits_and_transaction_blocks(
    asandbox: Sandbox, dsn: str, driver_pg_url: DatabaseURL, tag: str
) -> None:
    async with await asandbox.acheckout():
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute(INSERT, (tag + "a",))
            await conn.commit()
            async with conn.transaction():
                await conn.execute(INSERT, (tag + "b",))
                with pytest.raises(ZeroDivisionError):
                    async with conn.transaction():
                        await conn.execute(INSERT, (tag + "c",))
                        raise ZeroDivisionError
        other = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        cur = await other.execute(
            "SELECT name FROM items WHERE name LIKE %s ORDER BY name", (tag + "%",)
        )
        assert [r[0] for r in await cur.fetchall()] == [tag + "a", tag + "b"]
        with pytest.raises(psycopg.errors.UniqueViolation):
            await other.execute(INSERT, (tag + "a",))
        await other.execute(INSERT, (tag + "d",))  # not poisoned
        await other.close()
        assert committed(driver_pg_url, tag) == []
    assert committed(driver_pg_url, tag) == []


@pytest.mark.asyncio
async def test_async_pool_many_tasks_of_one_owner_take_turns(
    asandbox: Sandbox, dsn: str, driver_pg_url: DatabaseURL, tag: str
) -> None:
    pool = psycopg_pool.AsyncConnectionPool(dsn, min_size=2, open=False)
    await pool.open()
    async with await asandbox.acheckout():

        async def worker(i: int) -> None:
            async with pool.connection() as conn, conn.transaction():
                for j in range(3):
                    await conn.execute(INSERT, (f"{tag}{i:02d}_{j}",))
                    await asyncio.sleep(0)  # let the other tasks try to cut in

        await asyncio.gather(*(worker(i) for i in range(20)))
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM items WHERE name LIKE %s", (tag + "%",))
            assert await cur.fetchone() == (60,)

        async def outsider() -> None:
            async with pool.connection():
                pass

        with pytest.raises(OwnershipError, match="is not allowed"):
            await asyncio.get_running_loop().create_task(outsider(), context=contextvars.Context())
    await pool.close()
    assert committed(driver_pg_url, tag) == []


def test_names_imported_before_install_are_routed_and_restored(
    driver_pg_url: DatabaseURL, dsn: str
) -> None:
    import types

    app = types.ModuleType("fake_app_db")
    app.connect = psycopg.connect  # type: ignore[attr-defined]  # `from psycopg import connect`
    original = psycopg.connect
    sys.modules["fake_app_db"] = app
    box = Sandbox(driver_pg_url)
    try:
        sqlsandbox.psycopg.install(box)
        with box.checkout(), app.connect(dsn) as conn:
            assert isinstance(conn, sqlsandbox.psycopg.SandboxConnection)
        sqlsandbox.psycopg.uninstall(box)
        assert app.connect is original
    finally:
        del sys.modules["fake_app_db"]
        box.close()


def test_sqlalchemy_engines_are_left_to_sqlsandbox_sqlalchemy(
    sandbox: Sandbox, driver_pg_url: DatabaseURL
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(
        driver_pg_url.with_scheme("postgresql+psycopg").render(), poolclass=NullPool
    )
    try:
        with engine.begin() as conn:  # no owner needed: SQLAlchemy's connects pass through
            assert type(conn.connection.dbapi_connection) is psycopg.Connection
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
