"""Overlapping transactions of one owner through PyMySQL and aiomysql used directly (MariaDB).

The twin of ``test_overlapping_direct.py``: two connections an app opens are
two leases of the owner's one connection, and a transaction that only read
rolls back like a commit, keeping what the other connection committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomysql
import pymysql
import pytest
import pytest_asyncio

import sqlsandbox.mysql
from sqlsandbox import Sandbox
from sqlsandbox._urls import DatabaseURL

SELECT = "SELECT name FROM items WHERE name LIKE %s ORDER BY name"
INSERT = "INSERT INTO items (name) VALUES (%s)"


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


@pytest.fixture
def sandbox(driver_maria_url: DatabaseURL) -> Iterator[Sandbox]:
    box = Sandbox(driver_maria_url, name="pymysql-overlap")
    sqlsandbox.mysql.install(box)
    yield box
    sqlsandbox.mysql.uninstall(box)
    box.close()


@pytest_asyncio.fixture
async def asandbox(driver_maria_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_maria_url, name="aiomysql-overlap")
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
