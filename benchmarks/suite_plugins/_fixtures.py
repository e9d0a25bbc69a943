"""Fixtures every baseline offers in place of sqlsandbox's (import them into the plugin module)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from ._common import isolation_of, point_env, sync_engine, unique

__all__ = [
    "STATE",
    "_app_pool_per_test",
    "_baseline_isolation",
    "_database_isolation",
    "_test_sync_engine",
    "async_db_session",
    "db_session",
    "db_url",
    "unique",
]

#: What the plugin module set up for this process: dbs, template, worker database name.
STATE: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _database_isolation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Give tests marked isolation="database" a fresh clone, and point the app at it."""
    dbs = STATE["dbs"]
    if isolation_of(request.node) != "database":
        yield STATE["worker"]
        return
    from reminders import db

    name = dbs.fresh_clone(STATE["template"])
    url = dbs.url(name)
    async_engine = create_async_engine(url.replace("+psycopg", "+asyncpg"))
    own_sync = sync_engine(url)
    point_env(url)
    db.SessionLocal.configure(bind=async_engine)
    db.SyncSessionLocal.configure(bind=own_sync)
    try:
        yield name
    finally:
        db.SessionLocal.configure(bind=db.async_engine)
        db.SyncSessionLocal.configure(bind=db.sync_engine)
        point_env(dbs.url(STATE["worker"]))
        own_sync.dispose()
        # _app_pool_per_test closed its connections in the test's loop.
        dbs.drop(name)


@pytest.fixture
def _baseline_isolation(_database_isolation: str) -> Iterator[str]:
    """The plugin's own per-test isolation (each plugin module redefines it)."""
    yield _database_isolation


@pytest.fixture
def db_url(_database_isolation: str) -> str:
    """Return the URL of the database this test uses."""
    return str(STATE["dbs"].url(_database_isolation, scheme="postgresql"))


@pytest_asyncio.fixture(autouse=True)
async def _app_pool_per_test(_baseline_isolation: str) -> AsyncIterator[None]:
    """Close the app's pooled asyncpg connections with the loop that opened them.

    asyncpg connections belong to one event loop, and pytest-asyncio gives
    every test a new one.
    """
    from reminders.db import SessionLocal

    bind = SessionLocal.kw["bind"]
    # The savepoint recipe binds the factory to a connection: dispose its engine.
    engine = bind.engine if isinstance(bind, AsyncConnection) else bind
    yield
    await engine.dispose()


@pytest.fixture(scope="session")
def _test_sync_engine() -> Iterator[Engine]:
    engine = sync_engine(STATE["dbs"].url(STATE["worker"]))
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(_baseline_isolation: str, _test_sync_engine: Engine) -> Iterator[Session]:
    """Return a session of the test suite's own on this test's database (commits are real)."""
    if _baseline_isolation == STATE["worker"]:
        with Session(_test_sync_engine, expire_on_commit=False) as session:
            yield session
        return
    engine = sync_engine(STATE["dbs"].url(_baseline_isolation))
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


@pytest_asyncio.fixture
async def async_db_session(_baseline_isolation: str) -> AsyncIterator[AsyncSession]:
    """Return an async session of the suite's own on this test's database (commits are real).

    A NullPool engine per test: asyncpg connections cannot outlive the test's loop.
    """
    url = STATE["dbs"].url(_baseline_isolation, scheme="postgresql+asyncpg")
    engine = create_async_engine(url, poolclass=NullPool)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session
    await engine.dispose()
