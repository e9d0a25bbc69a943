"""Callbacks an app adds to a routed asyncpg connection end with the connection it added them to.

Owners of one event loop reuse one server connection. asyncpg keeps
``add_listener`` / ``add_log_listener`` / ``add_termination_listener`` /
``add_query_logger`` callbacks on the connection object, so without care the
next owner would inherit them (its queries reported to the previous test's
logger, a channel it listens to silently skipped because asyncpg believes it
already listens). Like asyncpg's own pool release, giving the proxy back or
checking the owner in removes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

import sqlsandbox.asyncpg
from sqlsandbox import Sandbox
from sqlsandbox._urls import DatabaseURL


@pytest.fixture
def dsn(driver_pg_url: DatabaseURL) -> str:
    return driver_pg_url.with_scheme("postgresql").render()


@pytest_asyncio.fixture
async def sandbox(driver_pg_url: DatabaseURL) -> AsyncIterator[Sandbox]:
    box = Sandbox(driver_pg_url, name="asyncpg-callbacks")
    sqlsandbox.asyncpg.install(box)
    yield box
    sqlsandbox.asyncpg.uninstall(box)
    await box.aclose()


async def _settle() -> None:
    """Let the callbacks asyncpg scheduled with call_soon run."""
    await asyncio.sleep(0)


def _add_all(conn: Any, seen: list[str]) -> None:
    conn.add_query_logger(lambda record: seen.append(f"query {record.query}"))
    conn.add_log_listener(lambda c, message: seen.append(f"log {message}"))
    conn.add_termination_listener(lambda c: seen.append("terminated"))


@pytest.mark.asyncio
@pytest.mark.parametrize("close", [True, False], ids=["closed", "left-open"])
async def test_the_next_owner_inherits_no_callbacks(
    sandbox: Sandbox, dsn: str, close: bool
) -> None:
    first: list[str] = []
    async with await sandbox.acheckout(name="first"):
        conn = await asyncpg.connect(dsn)
        raw = conn._raw
        _add_all(conn, first)
        await conn.add_listener("sqlsandbox_test_channel", lambda *args: first.append("notify"))
        await conn.fetchval("SELECT 1")
        await _settle()
        assert "query SELECT 1" in first
        if close:
            await conn.close()
    first.clear()
    async with await sandbox.acheckout(name="second"):
        conn = await asyncpg.connect(dsn)
        assert conn._raw is raw  # the same server connection, reused
        await conn.execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
        await conn.fetchval("SELECT 2")
        await _settle()
        await conn.close()
    assert first == []


@pytest.mark.asyncio
async def test_a_channel_is_listened_to_again_by_the_next_owner(sandbox: Sandbox, dsn: str) -> None:
    async with await sandbox.acheckout(name="first"):
        conn = await asyncpg.connect(dsn)
        raw = conn._raw
        await conn.add_listener("sqlsandbox_test_channel", lambda *args: None)
    # An owner whose writes commit (isolation "none"): its LISTEN takes effect.
    async with await sandbox.acheckout(name="second", sandbox=False):
        conn = await asyncpg.connect(dsn)
        assert conn._raw is raw
        heard = asyncio.Event()
        await conn.add_listener("sqlsandbox_test_channel", lambda *args: heard.set())
        listening = await conn.fetchval("SELECT array_agg(c) FROM pg_listening_channels() c")
        assert listening == ["sqlsandbox_test_channel"]
        await conn.execute("NOTIFY sqlsandbox_test_channel")
        await heard.wait()
        await conn.close()


@pytest.mark.asyncio
async def test_removing_a_callback_still_works(sandbox: Sandbox, dsn: str) -> None:
    seen: list[str] = []

    def logger(record: Any) -> None:
        if record.query.startswith("SELECT"):  # not the sandbox's savepoints around them
            seen.append(record.query)

    async with await sandbox.acheckout():
        conn = await asyncpg.connect(dsn)
        conn.add_query_logger(logger)
        await conn.fetchval("SELECT 1")
        conn.remove_query_logger(logger)
        await conn.fetchval("SELECT 2")
        await _settle()
        assert seen == ["SELECT 1"]
        await conn.close()
