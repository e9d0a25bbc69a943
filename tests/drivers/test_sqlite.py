"""sqlite3 and aiosqlite used directly by the app are routed through the sandbox."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest
import pytest_asyncio

import sqlsandbox.sqlite
from sqlsandbox import ConfigError, OwnershipError, Sandbox
from sqlsandbox._urls import DatabaseURL

INSERT = "INSERT INTO items (name) VALUES (?)"


def committed(path: str, tag: str) -> list[str]:
    """Names starting with *tag* that another client sees.

    ``sqlite3.dbapi2.connect`` is the C function itself, which the sandbox
    never patches (only ``sqlite3.connect`` and the app's references to it).
    """
    conn = sqlite3.dbapi2.connect(path)
    try:
        rows = conn.execute(
            "SELECT name FROM items WHERE name LIKE ? ORDER BY name", (tag + "%",)
        ).fetchall()
        return [r[0] for r in rows]
    finally:
        conn.close()


@pytest.fixture
def path(driver_sqlite_url: DatabaseURL) -> str:
    assert driver_sqlite_url.database is not None
    return driver_sqlite_url.database


@pytest.fixture
def sandbox(driver_sqlite_url: DatabaseURL) -> Iterator[Sandbox]:
    box = Sandbox(driver_sqlite_url, name="sqlite-direct")
    sqlsandbox.sqlite.install(box)
    yield box
    sqlsandbox.sqlite.uninstall(box)
    box.close()


@pytest_asyncio.fixture
async def asandbox(driver_sqlite_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_sqlite_url, name="aiosqlite-direct")
    sqlsandbox.sqlite.install(box)
    # Open the (idle) aiosqlite connection here: its worker thread must not
    # look like a thread the test leaked.
    async with await box.acheckout():
        pass
    yield box
    sqlsandbox.sqlite.uninstall(box)
    await box.aclose()


def names(conn: sqlite3.Connection, tag: str) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM items WHERE name LIKE ? ORDER BY name", (tag + "%",)
    ).fetchall()
    return [r[0] for r in rows]


# -- sqlite3 ------------------------------------------------------------------------------


def test_app_commits_become_savepoints_and_vanish_after_checkin(
    sandbox: Sandbox, path: str, tag: str
) -> None:
    with sandbox.checkout(name="test_commits"):
        conn = sqlite3.connect(path)
        conn.execute(INSERT, (tag + "a",))
        assert conn.in_transaction  # sqlite3's implicit BEGIN before DML
        conn.commit()
        assert not conn.in_transaction
        with conn:  # commits at the end, does not close
            conn.execute(INSERT, (tag + "b",))
        conn.close()
        other = sqlite3.connect(Path(path))  # commit-then-read, on a "new" connection
        assert names(other, tag) == [tag + "a", tag + "b"]
        other.close()
    assert committed(path, tag) == []
    with sandbox.checkout():
        assert names(sqlite3.connect(path), tag) == []


def test_rollback_explicit_transactions_and_app_savepoints(
    sandbox: Sandbox, path: str, tag: str
) -> None:
    with sandbox.checkout():
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(INSERT, (tag + "autocommit",))
        assert not conn.in_transaction
        conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
            conn.execute("BEGIN")
        conn.execute(INSERT, (tag + "outer",))
        conn.execute("SAVEPOINT app")
        conn.execute(INSERT, (tag + "inner",))
        conn.execute("ROLLBACK TO app")  # the app's own savepoint, nested in ours
        conn.execute("RELEASE app")
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.execute(INSERT, (tag + "rolled",))
        conn.execute("ROLLBACK")
        legacy = sqlite3.connect(path)
        legacy.execute(INSERT, (tag + "legacy",))
        legacy.rollback()
        with pytest.raises(ZeroDivisionError), legacy:
            legacy.execute(INSERT, (tag + "with-rolled",))
            raise ZeroDivisionError
        assert names(conn, tag) == [tag + "autocommit", tag + "outer"]
    assert committed(path, tag) == []


def test_executescript_does_not_commit_the_test_transaction(
    sandbox: Sandbox, path: str, tag: str
) -> None:
    with sandbox.checkout():
        conn = sqlite3.connect(path)
        conn.execute(INSERT, (tag + "pending",))
        conn.executescript(
            f"""
            BEGIN;
            INSERT INTO items (name) VALUES ('{tag}script;1');  -- a ; inside a string
            /* a comment */ INSERT INTO items (name) VALUES ('{tag}script2');
            COMMIT;
            """
        )
        assert names(conn, tag) == [tag + "pending", tag + "script2", tag + "script;1"]
    assert committed(path, tag) == []


def test_row_factory_belongs_to_the_proxy(sandbox: Sandbox, path: str, tag: str) -> None:
    with sandbox.checkout():
        rows_conn = sqlite3.connect(path)
        rows_conn.row_factory = sqlite3.Row
        plain = sqlite3.connect(path)
        rows_conn.execute(INSERT, (tag + "x",))
        row = rows_conn.execute("SELECT name FROM items WHERE name = ?", (tag + "x",)).fetchone()
        assert row["name"] == tag + "x"
        assert plain.execute("SELECT 1").fetchone() == (1,)
        cur = rows_conn.cursor()
        cur.execute("SELECT count(*) AS n FROM items WHERE name LIKE ?", (tag + "%",))
        assert cur.fetchone()["n"] == 1 and cur.connection is rows_conn


def test_threads_take_turns_and_an_unowned_thread_is_refused(
    sandbox: Sandbox, path: str, tag: str
) -> None:
    owner = sandbox.checkout(name="test_threads")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            conn = sqlite3.connect(path)
            for j in range(5):
                with conn:
                    conn.execute(INSERT, (f"{tag}{i}_{j}",))
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        sandbox.allow(owner, t)
        t.start()
    intruder = threading.Thread(target=worker, args=(99,), name="intruder")
    intruder.start()
    for t in [*threads, intruder]:
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], OwnershipError)
    assert "thread 'intruder' is not allowed" in str(errors[0])
    assert len(names(sqlite3.connect(path), tag)) == 30
    sandbox.checkin(owner)
    assert committed(path, tag) == []


def test_other_databases_pass_through(sandbox: Sandbox, tmp_path: Path) -> None:
    memory = sqlite3.connect(":memory:")
    assert type(memory) is sqlite3.Connection
    other = sqlite3.connect(tmp_path / "other.sqlite3")  # no owner needed
    assert type(other) is sqlite3.Connection
    other.execute("CREATE TABLE t (x)")
    other.close()
    memory.close()


def test_install_refuses_memory_and_uninstall_restores(
    driver_sqlite_url: DatabaseURL, path: str
) -> None:
    with pytest.raises(ConfigError, match="in-memory database cannot be shared"):
        sqlsandbox.sqlite.install(Sandbox(), database=":memory:")
    originals = (sqlite3.connect, aiosqlite.connect)
    box = Sandbox(driver_sqlite_url)
    sqlsandbox.sqlite.install(box)
    try:
        assert (sqlite3.connect, aiosqlite.connect) != originals
        assert sqlsandbox.sqlite.is_installed(box)
    finally:
        sqlsandbox.sqlite.uninstall(box)
        box.close()
    assert (sqlite3.connect, aiosqlite.connect) == originals
    conn = sqlite3.connect(path)
    assert type(conn) is sqlite3.Connection
    conn.close()


# -- aiosqlite --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aiosqlite_commits_vanish_and_tasks_take_turns(
    asandbox: Sandbox, path: str, tag: str
) -> None:
    async with await asandbox.acheckout():
        async with aiosqlite.connect(path) as db:
            await db.execute(INSERT, (tag + "a",))
            assert db.in_transaction
            await db.commit()
            await db.execute(INSERT, (tag + "rolled",))
            await db.rollback()

        async def worker(i: int) -> None:
            db = await aiosqlite.connect(path)
            for j in range(3):
                await db.execute(INSERT, (f"{tag}w{i}_{j}",))
                await asyncio.sleep(0)  # let the other tasks try to cut in
            await db.commit()
            await db.close()

        await asyncio.gather(*(worker(i) for i in range(10)))
        async with aiosqlite.connect(path) as db:
            db.row_factory = aiosqlite.Row
            async with db.execute(
                "SELECT count(*) AS n FROM items WHERE name LIKE ?", (tag + "%",)
            ) as cur:
                assert (await cur.fetchone())["n"] == 31
            rows = await db.execute_fetchall("SELECT name FROM items WHERE name = ?", (tag + "a",))
            assert [r["name"] for r in rows] == [tag + "a"]

        async def outsider() -> None:
            await aiosqlite.connect(path)

        with pytest.raises(OwnershipError, match="is not allowed"):
            await asyncio.get_running_loop().create_task(outsider(), context=contextvars.Context())
    assert committed(path, tag) == []
