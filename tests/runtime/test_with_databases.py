"""Virtual time next to real databases: a query in flight keeps real time, timers still jump."""

from __future__ import annotations

import asyncio
import time

import pytest

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.runtime import virtual_time

# Each query takes 200 ms of real time; a 1 s bound on it must not expire on a jump
# to the competing hour-long timer, and the hour must still pass instantly.


async def _race(query: asyncio.Future[object] | object) -> tuple[object, float, float]:
    async with virtual_time() as clock:
        hour = asyncio.create_task(asyncio.sleep(3600))
        started = time.perf_counter()
        result = await asyncio.wait_for(query, 1)  # type: ignore[arg-type]
        query_real = time.perf_counter() - started
        await hour
        return result, query_real, clock.elapsed


@pytest.mark.asyncio
async def test_asyncpg_query_in_flight(postgres_admin_url: DatabaseURL) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    conn = await asyncpg.connect(str(postgres_admin_url.with_scheme("postgresql")))
    try:
        result, query_real, elapsed = await _race(conn.fetchval("SELECT 7 FROM pg_sleep(0.2)"))
    finally:
        await conn.close()
    assert result == 7
    assert query_real >= 0.19
    assert elapsed == pytest.approx(3600, abs=1)


@pytest.mark.asyncio
async def test_psycopg_async_query_in_flight(postgres_admin_url: DatabaseURL) -> None:
    psycopg = pytest.importorskip("psycopg")
    conn = await psycopg.AsyncConnection.connect(
        str(postgres_admin_url.with_scheme("postgresql")), autocommit=True
    )
    try:

        async def query() -> object:
            cursor = await conn.execute("SELECT 7 FROM pg_sleep(0.2)")
            row = await cursor.fetchone()
            return row[0] if row else None

        result, query_real, elapsed = await _race(query())
    finally:
        await conn.close()
    assert result == 7
    assert query_real >= 0.19
    assert elapsed == pytest.approx(3600, abs=1)


@pytest.mark.asyncio
async def test_aiomysql_query_in_flight(mariadb_admin_url: DatabaseURL) -> None:
    aiomysql = pytest.importorskip("aiomysql")
    conn = await aiomysql.connect(
        host=mariadb_admin_url.host or "127.0.0.1",
        port=mariadb_admin_url.port or 3306,
        user=mariadb_admin_url.username or "root",
        password=mariadb_admin_url.password or "",
    )
    try:

        async def query() -> object:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT 7 FROM (SELECT SLEEP(0.2)) AS wait")
                row = await cursor.fetchone()
                return row[0] if row else None

        result, query_real, elapsed = await _race(query())
    finally:
        conn.close()
    assert result == 7
    assert query_real >= 0.19
    assert elapsed == pytest.approx(3600, abs=1)
