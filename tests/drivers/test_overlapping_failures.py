"""A failed statement of one connection spares the other connections of the same owner.

Each direct driver (asyncpg, psycopg sync and async, sqlite3, aiosqlite,
PyMySQL, aiomysql) runs the same story: a test connection opens a
transaction and reads, an app connection opens one above it and writes,
then the test connection's INSERT breaks a unique constraint. The app
connection keeps working and commits, the test connection rolls back, and
what the app committed is still there. Without a savepoint around the failed
statement, the failure would abort the test's transaction (PostgreSQL) or
the test connection's rollback would undo the app's work, which landed
inside its savepoint.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import aiomysql
import aiosqlite
import asyncpg
import psycopg
import pymysql
import pytest
import pytest_asyncio

import sqlsandbox.asyncpg
import sqlsandbox.mysql
import sqlsandbox.psycopg
import sqlsandbox.sqlite
from sqlsandbox import Sandbox
from sqlsandbox._urls import DatabaseURL

SELECT = "SELECT name FROM items WHERE name LIKE %s ORDER BY name"
INSERT = "INSERT INTO items (name) VALUES (%s)"
DUPLICATE = r"(?i)unique|duplicate"


def expected(tag: str) -> list[str]:
    return [tag + "taken", tag + "winner", tag + "winner2"]


Route = Callable[[DatabaseURL, ModuleType], Sandbox]


@pytest.fixture
def route() -> Iterator[Route]:
    """Make sandboxes on a database, each routing one driver module (``sqlsandbox.psycopg``...)."""
    made: list[tuple[Sandbox, ModuleType]] = []

    def make(url: DatabaseURL, module: ModuleType) -> Sandbox:
        box = Sandbox(url, name=f"direct-failures-{module.__name__}")
        module.install(box)
        made.append((box, module))
        return box

    yield make
    for box, module in made:
        module.uninstall(box)
        box.close()


@pytest_asyncio.fixture
async def aroute() -> AsyncIterator[Route]:
    """:func:`route` for asyncio drivers: the sandboxes close on the test's event loop."""
    made: list[tuple[Sandbox, ModuleType]] = []

    def make(url: DatabaseURL, module: ModuleType) -> Sandbox:
        box = Sandbox(url, name=f"direct-failures-async-{module.__name__}")
        module.install(box)
        made.append((box, module))
        return box

    yield make
    for box, module in made:
        module.uninstall(box)
        await box.aclose()


@pytest_asyncio.fixture
async def asqlite_sandbox(driver_sqlite_url: DatabaseURL, aroute: Route) -> Sandbox:
    box = aroute(driver_sqlite_url, sqlsandbox.sqlite)
    # Open the (idle) aiosqlite connection here: its worker thread must not
    # look like a thread the test leaked.
    async with await box.acheckout():
        pass
    return box


def pg_dsn(url: DatabaseURL) -> str:
    return url.with_scheme("postgresql").render()


def mysql_kw(url: DatabaseURL) -> dict[str, Any]:
    return {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password or "",
        "db": url.database,
    }


# -- PostgreSQL --------------------------------------------------------------------------


def test_psycopg(route: Route, driver_pg_url: DatabaseURL, tag: str) -> None:
    box = route(driver_pg_url, sqlsandbox.psycopg)
    dsn = pg_dsn(driver_pg_url)
    with box.checkout(), psycopg.connect(dsn) as loser, psycopg.connect(dsn) as winner:
        loser.execute(INSERT, (tag + "taken",))
        loser.commit()
        loser.execute(SELECT, (tag + "%",)).fetchall()
        winner.execute(INSERT, (tag + "winner",))
        with pytest.raises(psycopg.errors.UniqueViolation):
            loser.execute(INSERT, (tag + "taken",))
        winner.execute(INSERT, (tag + "winner2",))  # not "current transaction is aborted"
        winner.commit()
        loser.rollback()
        rows = winner.execute(SELECT, (tag + "%",)).fetchall()
        assert [row[0] for row in rows] == expected(tag)


@pytest.mark.asyncio
async def test_async_psycopg(aroute: Route, driver_pg_url: DatabaseURL, tag: str) -> None:
    box = aroute(driver_pg_url, sqlsandbox.psycopg)
    dsn = pg_dsn(driver_pg_url)
    async with await box.acheckout():
        loser = await psycopg.AsyncConnection.connect(dsn)
        winner = await psycopg.AsyncConnection.connect(dsn)
        await loser.execute(INSERT, (tag + "taken",))
        await loser.commit()
        await (await loser.execute(SELECT, (tag + "%",))).fetchall()
        await winner.execute(INSERT, (tag + "winner",))
        with pytest.raises(psycopg.errors.UniqueViolation):
            await loser.execute(INSERT, (tag + "taken",))
        await winner.execute(INSERT, (tag + "winner2",))
        await winner.commit()
        await loser.rollback()
        rows = await (await winner.execute(SELECT, (tag + "%",))).fetchall()
        assert [row[0] for row in rows] == expected(tag)
        await winner.close()
        await loser.close()


@pytest.mark.asyncio
async def test_asyncpg(aroute: Route, driver_pg_url: DatabaseURL, tag: str) -> None:
    box = aroute(driver_pg_url, sqlsandbox.asyncpg)
    select, insert = SELECT.replace("%s", "$1"), INSERT.replace("%s", "$1")
    async with await box.acheckout():
        loser = await asyncpg.connect(pg_dsn(driver_pg_url))
        winner = await asyncpg.connect(pg_dsn(driver_pg_url))
        await loser.execute(insert, tag + "taken")
        reading = loser.transaction()
        await reading.start()
        await loser.fetch(select, tag + "%")
        writing = winner.transaction()
        await writing.start()
        await winner.execute(insert, tag + "winner")
        with pytest.raises(asyncpg.UniqueViolationError):
            await loser.execute(insert, tag + "taken")
        await winner.execute(insert, tag + "winner2")
        await writing.commit()
        await reading.rollback()
        rows = await winner.fetch(select, tag + "%")
        assert [row[0] for row in rows] == expected(tag)
        await winner.close()
        await loser.close()


# -- SQLite ------------------------------------------------------------------------------


def test_sqlite3(route: Route, driver_sqlite_url: DatabaseURL, tag: str) -> None:
    box = route(driver_sqlite_url, sqlsandbox.sqlite)
    path = driver_sqlite_url.database
    assert path is not None
    select, insert = SELECT.replace("%s", "?"), INSERT.replace("%s", "?")
    with box.checkout():
        loser = sqlite3.connect(path)
        winner = sqlite3.connect(path)
        loser.execute(insert, (tag + "taken",))
        loser.commit()
        loser.execute("BEGIN")
        loser.execute(select, (tag + "%",)).fetchall()
        winner.execute(insert, (tag + "winner",))
        with pytest.raises(sqlite3.IntegrityError):
            loser.execute(insert, (tag + "taken",))
        winner.execute(insert, (tag + "winner2",))
        winner.commit()
        loser.rollback()
        rows = winner.execute(select, (tag + "%",)).fetchall()
        assert [row[0] for row in rows] == expected(tag)
        winner.close()
        loser.close()


@pytest.mark.asyncio
async def test_aiosqlite(
    asqlite_sandbox: Sandbox, driver_sqlite_url: DatabaseURL, tag: str
) -> None:
    path = driver_sqlite_url.database
    assert path is not None
    select, insert = SELECT.replace("%s", "?"), INSERT.replace("%s", "?")
    async with await asqlite_sandbox.acheckout():
        loser = await aiosqlite.connect(path)
        winner = await aiosqlite.connect(path)
        await loser.execute(insert, (tag + "taken",))
        await loser.commit()
        await loser.execute("BEGIN")
        await (await loser.execute(select, (tag + "%",))).fetchall()
        await winner.execute(insert, (tag + "winner",))
        with pytest.raises(sqlite3.IntegrityError):
            await loser.execute(insert, (tag + "taken",))
        await winner.execute(insert, (tag + "winner2",))
        await winner.commit()
        await loser.rollback()
        rows = await (await winner.execute(select, (tag + "%",))).fetchall()
        assert [row[0] for row in rows] == expected(tag)
        await winner.close()
        await loser.close()


# -- MariaDB -----------------------------------------------------------------------------


def test_pymysql(route: Route, driver_maria_url: DatabaseURL, tag: str) -> None:
    box = route(driver_maria_url, sqlsandbox.mysql)
    kw = mysql_kw(driver_maria_url)
    with box.checkout():
        loser = pymysql.connect(**kw)
        winner = pymysql.connect(**kw)
        with loser.cursor() as cur:
            cur.execute(INSERT, (tag + "taken",))
            loser.commit()
            cur.execute(SELECT, (tag + "%",))
        with winner.cursor() as cur:
            cur.execute(INSERT, (tag + "winner",))
        with pytest.raises(pymysql.err.IntegrityError, match=DUPLICATE), loser.cursor() as cur:
            cur.execute(INSERT, (tag + "taken",))
        with winner.cursor() as cur:
            cur.execute(INSERT, (tag + "winner2",))
            winner.commit()
        loser.rollback()
        with winner.cursor() as cur:
            cur.execute(SELECT, (tag + "%",))
            assert [row[0] for row in cur.fetchall()] == expected(tag)
        winner.close()
        loser.close()


@pytest.mark.asyncio
async def test_aiomysql(aroute: Route, driver_maria_url: DatabaseURL, tag: str) -> None:
    box = aroute(driver_maria_url, sqlsandbox.mysql)
    kw = mysql_kw(driver_maria_url)
    async with await box.acheckout():
        loser = await aiomysql.connect(**kw)
        winner = await aiomysql.connect(**kw)
        async with loser.cursor() as cur:
            await cur.execute(INSERT, (tag + "taken",))
            await loser.commit()
            await cur.execute(SELECT, (tag + "%",))
        async with winner.cursor() as cur:
            await cur.execute(INSERT, (tag + "winner",))
        with pytest.raises(pymysql.err.IntegrityError, match=DUPLICATE):
            async with loser.cursor() as cur:
                await cur.execute(INSERT, (tag + "taken",))
        async with winner.cursor() as cur:
            await cur.execute(INSERT, (tag + "winner2",))
            await winner.commit()
        await loser.rollback()
        async with winner.cursor() as cur:
            await cur.execute(SELECT, (tag + "%",))
            assert [row[0] for row in await cur.fetchall()] == expected(tag)
        winner.close()
        loser.close()
