"""Baseline ``savepoint_recipe``: the hand-written SQLAlchemy "join an external transaction" recipe.

Per test: one connection on each of the app's engines, a transaction begun
on it, and the app's session factories re-bound to that connection with
``join_transaction_mode="create_savepoint"`` so the app's commits become
savepoints; everything is rolled back at the end. One database per process,
built once with the migrations and sample data.

Its known limits show up as failures, not hidden: concurrent requests share
one asyncpg connection, the sync and async engines hold two transactions
that cannot see each other, sequences keep counting, and the connection is
bound to the test's event loop (TestClient runs the app on another one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from ._common import (
    Databases,
    import_app_paths,
    is_xdist_controller,
    isolation_of,
    point_env,
    register_markers,
)
from ._fixtures import *  # noqa: F403 - the plugin-shaped fixtures
from ._fixtures import STATE


def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    import_app_paths()
    if is_xdist_controller(early_config):
        return
    dbs = Databases("savepoint")
    point_env(dbs.url(dbs.name("db")))
    template = dbs.template()
    worker = dbs.create("db", template=template)
    STATE.update(dbs=dbs, template=template, worker=worker)


def pytest_configure(config: pytest.Config) -> None:
    register_markers(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "dbs" in STATE:
        STATE.pop("dbs").close()


@pytest_asyncio.fixture
async def _baseline_isolation(
    request: pytest.FixtureRequest, _database_isolation: str
) -> AsyncIterator[str]:
    if isolation_of(request.node) == "database":
        yield _database_isolation
        return
    from reminders import db

    conn = await db.async_engine.connect()
    outer = await conn.begin()
    sync_conn = db.sync_engine.connect()
    sync_outer = sync_conn.begin()
    db.SessionLocal.configure(bind=conn, join_transaction_mode="create_savepoint")
    db.SyncSessionLocal.configure(bind=sync_conn, join_transaction_mode="create_savepoint")
    STATE["recipe"] = (conn, sync_conn)
    try:
        yield _database_isolation
    finally:
        STATE.pop("recipe", None)
        db.SessionLocal.configure(
            bind=db.async_engine, join_transaction_mode="conservative_savepoint"
        )
        db.SyncSessionLocal.configure(
            bind=db.sync_engine, join_transaction_mode="conservative_savepoint"
        )
        try:
            await outer.rollback()
            await conn.close()
            await db.async_engine.dispose()
        finally:
            sync_outer.rollback()
            sync_conn.close()


@pytest_asyncio.fixture
async def async_db_session(_baseline_isolation: str) -> AsyncIterator[Any]:
    """Return an AsyncSession joined to the test's outer transaction."""
    from reminders import db

    if "recipe" not in STATE:  # isolation="database": a plain session on the test's database
        async with db.SessionLocal() as session:
            yield session
        return
    from sqlalchemy.ext.asyncio import AsyncSession

    async with AsyncSession(
        bind=STATE["recipe"][0], join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as session:
        yield session


@pytest.fixture
def db_session(_baseline_isolation: str) -> Any:
    """Return a Session joined to the test's outer transaction on the sync engine."""
    from reminders import db
    from sqlalchemy.orm import Session

    if "recipe" not in STATE:
        with db.SyncSessionLocal() as session:
            yield session
        return
    with Session(
        bind=STATE["recipe"][1], join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as session:
        yield session
