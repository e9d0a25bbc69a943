"""A deadlock between the owner's connection and another one, on MariaDB and PostgreSQL.

InnoDB resolves a deadlock by rolling back the whole transaction of the
victim: for a sandboxed test that is the test's transaction, so the app's
next statements would run outside it and commit for real. sqlsandbox loses
the connection at once with an error that says so. PostgreSQL aborts only
the transaction's current state: the app's rollback of its session (a
savepoint) brings the test back.

The other connection inserts rows before it closes the cycle, so that InnoDB,
which rolls back the lighter transaction, picks the owner's.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiomysql
import psycopg
import pymysql
import pytest
import pytest_asyncio
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import sqlsandbox.mysql
import sqlsandbox.psycopg
from sqlsandbox import OwnershipError, Sandbox
from sqlsandbox._urls import DatabaseURL

LOCK = "SELECT id FROM items WHERE id = %s FOR UPDATE"
INSERT = "INSERT INTO items (name) VALUES (%s)"
SELECT = "SELECT name FROM items WHERE name LIKE %s ORDER BY name"
LOST = r"rolled back the whole transaction of owner .* because of a deadlock"


class Other:
    """A plain connection outside the sandbox (SQLAlchemy's connects pass through)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)
        self.conn = self.engine.raw_connection()
        self.failed: BaseException | None = None
        self.thread: threading.Thread | None = None

    def run(self, sql: str, *args: Any) -> list[Any]:
        cur = self.conn.cursor()
        cur.execute(sql, args or None)
        rows = list(cur.fetchall()) if cur.description else []
        cur.close()
        return rows

    def run_in_thread(self, sql: str, *args: Any) -> None:
        """Run *sql* in a thread: it waits for a lock the owner holds."""

        def target() -> None:
            try:
                self.run(sql, *args)
            except BaseException as exc:
                self.failed = exc

        self.thread = threading.Thread(target=target, name="other-connection")
        self.thread.start()

    def finish(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.conn.dbapi_connection is not None:
            self.conn.rollback()
            self.conn.close()
        self.engine.dispose()


def seed(url: str, tag: str) -> tuple[int, int]:
    """Commit two rows both connections lock; return their ids."""
    other = Other(url)
    try:
        ids = []
        for name in ("a", "b"):
            other.run(INSERT, tag + name)
            ids.append(other.run("SELECT id FROM items WHERE name = %s", tag + name)[0][0])
        other.conn.commit()
        return ids[0], ids[1]
    finally:
        other.finish()


def cleanup(url: str, tag: str) -> None:
    other = Other(url)
    try:
        other.run("DELETE FROM items WHERE name LIKE %s", tag + "%")
        other.conn.commit()
    finally:
        other.finish()


def committed(url: str, tag: str) -> list[str]:
    other = Other(url)
    try:
        return [row[0] for row in other.run(SELECT, tag + "%")]
    finally:
        other.finish()


# -- MariaDB -------------------------------------------------------------------------------


@pytest.fixture
def maria(driver_maria_url: DatabaseURL, tag: str) -> Iterator[tuple[str, int, int]]:
    url = driver_maria_url.with_scheme("mysql+pymysql").render()
    a, b = seed(url, tag)
    yield url, a, b
    cleanup(url, tag)


@pytest.fixture
def kw(driver_maria_url: DatabaseURL) -> dict[str, Any]:
    url = driver_maria_url
    return {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password or "",
        "database": url.database,
    }


def heavy_lock(other: Other, tag: str, row: int) -> None:
    """Lock *row* in a transaction heavier than the owner's (InnoDB's victim is the lighter)."""
    for i in range(20):
        other.run(INSERT, f"{tag}other{i:02}")
    other.run(LOCK, row)


def test_pymysql_deadlock_loses_the_connection_before_anything_commits(
    driver_maria_url: DatabaseURL,
    maria: tuple[str, int, int],
    kw: dict[str, Any],
    tag: str,
) -> None:
    url, a, b = maria
    box = Sandbox(driver_maria_url, name="pymysql-deadlock")
    sqlsandbox.mysql.install(box)
    other = Other(url)
    try:
        with box.checkout():
            conn = pymysql.connect(**kw)
            cur = conn.cursor()
            cur.execute(INSERT, (tag + "before",))
            cur.execute(LOCK, (b,))
            heavy_lock(other, tag, a)
            other.run_in_thread(LOCK, b)  # waits for the owner
            with pytest.raises(OwnershipError, match=LOST) as info:
                cur.execute(LOCK, (a,))  # closes the cycle: InnoDB rolls the owner back
            assert isinstance(info.value.__cause__, pymysql.err.OperationalError)
            assert 'isolation="database"' in str(info.value)
            # The app catches the error and goes on: nothing may commit for real.
            with pytest.raises(OwnershipError, match=LOST):
                cur.execute(INSERT, (tag + "after",))
        other.finish()
        assert other.failed is None  # the other connection got its lock
        assert committed(url, tag) == [tag + "a", tag + "b"]
        with box.checkout():  # the next test gets a fresh connection
            conn = pymysql.connect(**kw)
            cur = conn.cursor()
            cur.execute(INSERT, (tag + "next",))
            cur.execute(SELECT, (tag + "%",))
            assert [row[0] for row in cur.fetchall()] == [tag + "a", tag + "b", tag + "next"]
        assert committed(url, tag) == [tag + "a", tag + "b"]
    finally:
        other.finish()
        sqlsandbox.mysql.uninstall(box)
        box.close()


@pytest_asyncio.fixture
async def asandbox(driver_maria_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_maria_url, name="aiomysql-deadlock")
    sqlsandbox.mysql.install(box)
    yield box
    sqlsandbox.mysql.uninstall(box)
    await box.aclose()


@pytest.mark.asyncio
async def test_aiomysql_deadlock_loses_the_connection_before_anything_commits(
    asandbox: Sandbox, maria: tuple[str, int, int], kw: dict[str, Any], tag: str
) -> None:
    url, a, b = maria
    akw = {**{k: v for k, v in kw.items() if k != "database"}, "db": kw["database"]}
    other = Other(url)
    try:
        async with await asandbox.acheckout():
            conn = await aiomysql.connect(**akw)
            cur = await conn.cursor()
            await cur.execute(LOCK, (b,))
            heavy_lock(other, tag, a)
            other.run_in_thread(LOCK, b)
            with pytest.raises(OwnershipError, match=LOST):
                await cur.execute(LOCK, (a,))
            with pytest.raises(OwnershipError, match=LOST):
                await cur.execute(INSERT, (tag + "after",))
    finally:
        other.finish()
    assert other.failed is None
    assert committed(url, tag) == [tag + "a", tag + "b"]


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
def pg(driver_pg_url: DatabaseURL, tag: str) -> Iterator[tuple[str, int, int]]:
    url = driver_pg_url.with_scheme("postgresql+psycopg").render()
    a, b = seed(url, tag)
    yield url, a, b
    cleanup(url, tag)


def wait_until(check: Callable[[], bool]) -> None:
    """Wait for the server to say *check*: a state, not a time."""
    while not check():
        pass


def test_psycopg_deadlock_aborts_only_the_apps_session(
    driver_pg_url: DatabaseURL, pg: tuple[str, int, int], tag: str
) -> None:
    url, a, b = pg
    dsn = driver_pg_url.with_scheme("postgresql").render()
    box = Sandbox(driver_pg_url, name="psycopg-deadlock")
    sqlsandbox.psycopg.install(box)
    other, watch = Other(url), Other(url)
    try:
        with box.checkout():
            test_conn = psycopg.connect(dsn)
            test_conn.execute(INSERT, (tag + "test",))
            test_conn.commit()
            app = psycopg.connect(dsn)
            # The owner detects the deadlock first: PostgreSQL aborts its statement.
            app.execute("SET deadlock_timeout = '10ms'")
            app.execute(LOCK, (b,))
            other.run("SET deadlock_timeout = '1min'")
            other.run(LOCK, a)
            pid = other.run("SELECT pg_backend_pid()")[0][0]
            other.run_in_thread(LOCK, b)
            lock_wait = "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted"
            wait_until(lambda: watch.run(lock_wait, pid)[0][0] > 0)
            with pytest.raises(psycopg.errors.DeadlockDetected):
                app.execute(LOCK, (a,))
            app.rollback()  # its session's savepoint: the test's transaction lives on
            app.execute(INSERT, (tag + "after",))
            app.commit()
            rows = test_conn.execute(SELECT, (tag + "%",)).fetchall()
            assert [row[0] for row in rows] == [tag + "a", tag + "after", tag + "b", tag + "test"]
        other.finish()
        assert other.failed is None
        assert committed(url, tag) == [tag + "a", tag + "b"]
    finally:
        other.finish()
        watch.finish()
        sqlsandbox.psycopg.uninstall(box)
        box.close()
