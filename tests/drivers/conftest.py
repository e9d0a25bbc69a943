"""Scratch databases for the driver tests, and SQLAlchemy engines routed through a sandbox.

One ``sqlsandbox_<uuid>`` database per backend and xdist worker, with the
tables of :data:`metadata`, dropped at the end. Tests write rows whose names
start with a unique tag and count only those.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlsandbox import Sandbox
from sqlsandbox._urls import DatabaseURL
from sqlsandbox.servers import connect_server
from sqlsandbox.sqlalchemy import install

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
)
#: PostgreSQL only: MariaDB has no deferrable constraints.
pg_metadata = MetaData()
parents = Table(
    "parents", pg_metadata, Column("id", Integer, primary_key=True, autoincrement=False)
)
children = Table(
    "children",
    pg_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column(
        "parent_id",
        Integer,
        ForeignKey("parents.id", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
)

#: Sync and async SQLAlchemy schemes per backend.
SYNC_SCHEMES = {
    "psycopg": "postgresql+psycopg",
    "psycopg2": "postgresql+psycopg2",
    "pysqlite": "sqlite+pysqlite",
    "pymysql": "mysql+pymysql",
}
ASYNC_SCHEMES = {
    "asyncpg": "postgresql+asyncpg",
    "psycopg_async": "postgresql+psycopg",
    "aiosqlite": "sqlite+aiosqlite",
    "aiomysql": "mysql+aiomysql",
}
BACKEND_OF = {
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "asyncpg": "postgresql",
    "psycopg_async": "postgresql",
    "pysqlite": "sqlite",
    "aiosqlite": "sqlite",
    "pymysql": "mariadb",
    "aiomysql": "mariadb",
}


def unique_name(tag: str = "") -> str:
    return f"sqlsandbox_{tag}{uuid.uuid4().hex[:12]}"


def _create_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        metadata.create_all(engine)
        if engine.dialect.name == "postgresql":
            pg_metadata.create_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def driver_pg_url(postgres_admin_url: DatabaseURL) -> Iterator[DatabaseURL]:
    server = connect_server(postgres_admin_url)
    name = unique_name("drv")
    server.create_database(name)
    try:
        url = server.database_url(name)
        _create_schema(url.with_scheme("postgresql+psycopg").render())
        yield url
    finally:
        server.drop_database(name)
        server.close()


@pytest.fixture(scope="session")
def driver_maria_url(mariadb_admin_url: DatabaseURL) -> Iterator[DatabaseURL]:
    server = connect_server(mariadb_admin_url)
    name = unique_name("drv")
    server.create_database(name)
    try:
        url = server.database_url(name)
        _create_schema(url.with_scheme("mysql+pymysql").render())
        yield url
    finally:
        server.drop_database(name)
        server.close()


@pytest.fixture(scope="session")
def driver_sqlite_url() -> Iterator[DatabaseURL]:
    with tempfile.TemporaryDirectory(prefix="sqlsandbox_") as tmp:
        path = Path(tmp) / f"{unique_name('drv')}.sqlite3"
        url = DatabaseURL(scheme="sqlite", database=str(path))
        _create_schema(url.with_scheme("sqlite+pysqlite").render())
        yield url


@dataclass
class Routed:
    """An engine routed through a fresh sandbox, and a way to look from outside."""

    driver: str
    backend: str
    url: DatabaseURL
    engine: Any
    sandbox: Sandbox

    def plain_engine(self) -> Engine:
        """A separate, unrouted sync engine on the same database."""
        scheme = {"postgresql": "postgresql+psycopg", "sqlite": "sqlite+pysqlite"}.get(
            self.backend, "mysql+pymysql"
        )
        return create_engine(self.url.with_scheme(scheme).render(), poolclass=_null_pool())

    def committed(self, tag: str) -> list[str]:
        """Names starting with *tag* that another client sees (committed rows)."""
        engine = self.plain_engine()
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(items.c.name).where(items.c.name.like(tag + "%")).order_by(items.c.name)
                )
                return list(rows.scalars())
        finally:
            engine.dispose()

    def cleanup(self, tag: str) -> None:
        engine = self.plain_engine()
        try:
            with engine.begin() as conn:
                conn.execute(items.delete().where(items.c.name.like(tag + "%")))
        finally:
            engine.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def _url_for(request: pytest.FixtureRequest, driver: str) -> DatabaseURL:
    backend = BACKEND_OF[driver]
    if backend == "postgresql":
        return request.getfixturevalue("driver_pg_url")  # type: ignore[no-any-return]
    if backend == "sqlite":
        return request.getfixturevalue("driver_sqlite_url")  # type: ignore[no-any-return]
    return request.getfixturevalue("driver_maria_url")  # type: ignore[no-any-return]


def sync_params() -> list[Any]:
    return [pytest.param(name, id=name) for name in SYNC_SCHEMES]


def async_params() -> list[Any]:
    return [pytest.param(name, id=name) for name in ASYNC_SCHEMES]


@pytest.fixture(params=sync_params())
def routed(request: pytest.FixtureRequest) -> Iterator[Routed]:
    """A sync engine of each DBAPI, routed through a manual-mode sandbox."""
    driver = request.param
    if driver == "psycopg2":
        pytest.importorskip("psycopg2", reason="pip install psycopg2-binary to test it")
    url = _url_for(request, driver)
    engine = create_engine(url.with_scheme(SYNC_SCHEMES[driver]).render())
    sandbox = Sandbox(url, name=f"sandbox-{driver}")
    install(engine, sandbox)
    yield Routed(driver, BACKEND_OF[driver], url, engine, sandbox)
    sandbox.close()
    engine.dispose()


@pytest_asyncio.fixture(params=async_params())
async def arouted(request: pytest.FixtureRequest) -> AsyncIterator[Routed]:
    """An async engine of each DBAPI, routed through a manual-mode sandbox."""
    driver = request.param
    url = _url_for(request, driver)
    engine: AsyncEngine = create_async_engine(url.with_scheme(ASYNC_SCHEMES[driver]).render())
    sandbox = Sandbox(url, name=f"sandbox-{driver}")
    install(engine, sandbox)
    yield Routed(driver, BACKEND_OF[driver], url, engine, sandbox)
    await sandbox.aclose()
    await engine.dispose()


@pytest.fixture
def tag() -> str:
    """A unique prefix for the rows one test writes."""
    return f"t{uuid.uuid4().hex[:10]}_"


def names_sql(tag: str) -> Any:
    return select(items.c.name).where(items.c.name.like(tag + "%")).order_by(items.c.name)


def count_sql(tag: str) -> Any:
    return text("SELECT count(*) FROM items WHERE name LIKE :p").bindparams(p=tag + "%")


MakeTag = Callable[[], str]
