"""Baseline ``pytest_postgresql``: pytest-postgresql's template-per-test fixtures (the package).

``postgresql_noproc`` builds a template once from the app's migrations and
sample data (its ``load`` hook); its ``postgresql`` fixture clones that
template into a fresh database for every test and drops it afterwards. The
app's session factories are re-bound to engines on each test's database, the
way a team using pytest-postgresql points its app at the per-test database.
Needs ``pytest-postgresql`` importable (the benchmark installs it apart from
the project's environment).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from pytest_postgresql import factories
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from sqlsandbox._urls import DatabaseURL

from ._common import import_app_paths, migrate, point_env, register_markers, seed, server_url
from ._common import unique as unique

SERVER = DatabaseURL.parse(server_url())
DBNAME = f"sqlsandbox_bench_pgpostgres_{uuid.uuid4().hex[:8]}"


def _url(dbname: str, scheme: str = "postgresql+psycopg") -> str:
    return SERVER.with_database(dbname).with_scheme(scheme).render()


def _load_template(host: str, port: int, user: str, dbname: str, **_: Any) -> None:
    url = _url(dbname)
    migrate(url)
    seed(url)


def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    import_app_paths()
    # The app builds its engines at import; every test re-binds its sessions anyway.
    point_env(_url(f"{DBNAME}_unused"))


def pytest_configure(config: pytest.Config) -> None:
    register_markers(config)


bench_pg_noproc = factories.postgresql_noproc(
    host=SERVER.host,
    port=SERVER.port,
    user=SERVER.username,
    password=SERVER.password,
    dbname=DBNAME,
    load=[_load_template],
)
bench_pg = factories.postgresql("bench_pg_noproc")


@pytest.fixture
def _test_database(bench_pg: Any) -> str:
    return str(bench_pg.info.dbname)


@pytest_asyncio.fixture(autouse=True)
async def _baseline_isolation(_test_database: str) -> AsyncIterator[tuple[AsyncEngine, Engine]]:
    from reminders import db

    url = _url(_test_database)
    # NullPool: the engine lives for one test, and asyncpg connections for one loop.
    async_engine = create_async_engine(
        _url(_test_database, "postgresql+asyncpg"), poolclass=NullPool
    )
    sync_engine = create_engine(url, poolclass=NullPool)
    db.SessionLocal.configure(bind=async_engine)
    db.SyncSessionLocal.configure(bind=sync_engine)
    point_env(url)
    try:
        yield async_engine, sync_engine
    finally:
        db.SessionLocal.configure(bind=db.async_engine)
        db.SyncSessionLocal.configure(bind=db.sync_engine)
        await async_engine.dispose()
        sync_engine.dispose()


@pytest.fixture
def db_url(_test_database: str) -> str:
    return _url(_test_database, "postgresql")


@pytest.fixture
def db_session(_baseline_isolation: tuple[AsyncEngine, Engine]) -> Iterator[Session]:
    with Session(_baseline_isolation[1], expire_on_commit=False) as session:
        yield session


@pytest_asyncio.fixture
async def async_db_session(
    _baseline_isolation: tuple[AsyncEngine, Engine],
) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(_baseline_isolation[0], expire_on_commit=False) as session:
        yield session
