"""Overlapping transactions of one owner through the direct drivers (asyncpg, psycopg, sqlite3).

Two connections an app opens are two leases of the owner's one connection: a
transaction that only read keeps what the other committed. A driver's nested
``transaction()`` blocks stay one transaction: rolling the outer one back
undoes the inner ones, committed or not, even when the outer one only read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import pytest
import pytest_asyncio

import sqlsandbox.asyncpg
import sqlsandbox.psycopg
import sqlsandbox.sqlite
from sqlsandbox import Sandbox
from sqlsandbox._urls import DatabaseURL

SELECT = "SELECT name FROM items WHERE name LIKE %s ORDER BY name"
INSERT = "INSERT INTO items (name) VALUES (%s)"


class Boom(Exception):
    pass


# -- asyncpg -----------------------------------------------------------------------------


@pytest_asyncio.fixture
async def asyncpg_sandbox(driver_pg_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_pg_url, name="asyncpg-overlap")
    sqlsandbox.asyncpg.install(box)
    yield box
    sqlsandbox.asyncpg.uninstall(box)
    await box.aclose()


def pg_dsn(url: DatabaseURL) -> str:
    return url.with_scheme("postgresql").render()


async def asyncpg_names(conn: asyncpg.Connection, tag: str) -> list[str]:
    rows = await conn.fetch(SELECT.replace("%s", "$1"), tag + "%")
    return [row[0] for row in rows]


@pytest.mark.asyncio
async def test_asyncpg_a_reading_transaction_keeps_another_connections_commit(
    asyncpg_sandbox: Sandbox, driver_pg_url: DatabaseURL, tag: str
) -> None:
    async with await asyncpg_sandbox.acheckout():
        test_conn = await asyncpg.connect(pg_dsn(driver_pg_url))
        app_conn = await asyncpg.connect(pg_dsn(driver_pg_url))
        reading = test_conn.transaction()
        await reading.start()
        assert await asyncpg_names(test_conn, tag) == []
        async with app_conn.transaction():
            await app_conn.execute(INSERT.replace("%s", "$1"), tag + "posted")
        await reading.rollback()
        assert await asyncpg_names(test_conn, tag) == [tag + "posted"]


@pytest.mark.asyncio
async def test_asyncpg_outer_block_that_only_read_undoes_its_inner_blocks(
    asyncpg_sandbox: Sandbox, driver_pg_url: DatabaseURL, tag: str
) -> None:
    async with await asyncpg_sandbox.acheckout():
        conn = await asyncpg.connect(pg_dsn(driver_pg_url))
        with pytest.raises(Boom):
            async with conn.transaction():
                await asyncpg_names(conn, tag)
                async with conn.transaction():
                    await conn.execute(INSERT.replace("%s", "$1"), tag + "inner")
                raise Boom
        assert await asyncpg_names(conn, tag) == []


# -- psycopg -----------------------------------------------------------------------------


@pytest.fixture
def psycopg_sandbox(driver_pg_url: DatabaseURL) -> Iterator[Sandbox]:
    box = Sandbox(driver_pg_url, name="psycopg-overlap")
    sqlsandbox.psycopg.install(box)
    yield box
    sqlsandbox.psycopg.uninstall(box)
    box.close()


@pytest_asyncio.fixture
async def apsycopg_sandbox(driver_pg_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_pg_url, name="psycopg-async-overlap")
    sqlsandbox.psycopg.install(box)
    yield box
    sqlsandbox.psycopg.uninstall(box)
    await box.aclose()


def psycopg_names(conn: psycopg.Connection, tag: str) -> list[str]:
    return [row[0] for row in conn.execute(SELECT, (tag + "%",)).fetchall()]


def test_psycopg_a_reading_transaction_keeps_another_connections_commit(
    psycopg_sandbox: Sandbox, driver_pg_url: DatabaseURL, tag: str
) -> None:
    dsn = pg_dsn(driver_pg_url)
    with psycopg_sandbox.checkout(), psycopg.connect(dsn) as test_conn:
        assert psycopg_names(test_conn, tag) == []  # psycopg opened a transaction
        with psycopg.connect(dsn) as app_conn:
            app_conn.execute(INSERT, (tag + "posted",))
            app_conn.commit()
        test_conn.rollback()
        assert psycopg_names(test_conn, tag) == [tag + "posted"]


def test_psycopg_outer_block_that_only_read_undoes_its_inner_blocks(
    psycopg_sandbox: Sandbox, driver_pg_url: DatabaseURL, tag: str
) -> None:
    with psycopg_sandbox.checkout(), psycopg.connect(pg_dsn(driver_pg_url)) as conn:
        psycopg_names(conn, tag)  # the connection's own transaction, below the blocks
        with pytest.raises(Boom), conn.transaction():
            psycopg_names(conn, tag)
            with conn.transaction():
                conn.execute(INSERT, (tag + "inner",))
            raise Boom
        assert psycopg_names(conn, tag) == []
        conn.execute(INSERT, (tag + "kept-until-rollback",))
        with conn.transaction():
            conn.execute(INSERT, (tag + "block",))
        conn.rollback()  # the connection's transaction: its blocks go with it
        assert psycopg_names(conn, tag) == []


@pytest.mark.asyncio
async def test_async_psycopg_outer_block_that_only_read_undoes_its_inner_blocks(
    apsycopg_sandbox: Sandbox, driver_pg_url: DatabaseURL, tag: str
) -> None:
    async with await apsycopg_sandbox.acheckout():
        conn = await psycopg.AsyncConnection.connect(pg_dsn(driver_pg_url), autocommit=True)
        with pytest.raises(Boom):
            async with conn.transaction():
                await conn.execute(SELECT, (tag + "%",))
                async with conn.transaction():
                    await conn.execute(INSERT, (tag + "inner",))
                raise Boom
        rows = await (await conn.execute(SELECT, (tag + "%",))).fetchall()
        assert rows == []
        await conn.close()


# -- sqlite3 -----------------------------------------------------------------------------


@pytest.fixture
def sqlite_sandbox(driver_sqlite_url: DatabaseURL) -> Iterator[Sandbox]:
    box = Sandbox(driver_sqlite_url, name="sqlite-overlap")
    sqlsandbox.sqlite.install(box)
    yield box
    sqlsandbox.sqlite.uninstall(box)
    box.close()


def test_sqlite3_a_reading_transaction_keeps_another_connections_commit(
    sqlite_sandbox: Sandbox, driver_sqlite_url: DatabaseURL, tag: str
) -> None:
    path = driver_sqlite_url.database
    assert path is not None
    with sqlite_sandbox.checkout():
        test_conn = sqlite3.connect(path)
        test_conn.execute("BEGIN")
        assert test_conn.execute(SELECT.replace("%s", "?"), (tag + "%",)).fetchall() == []
        app_conn = sqlite3.connect(path)
        app_conn.execute(INSERT.replace("%s", "?"), (tag + "posted",))
        app_conn.commit()
        app_conn.close()
        test_conn.rollback()
        rows = test_conn.execute(SELECT.replace("%s", "?"), (tag + "%",)).fetchall()
        assert rows == [(tag + "posted",)]
        test_conn.close()
