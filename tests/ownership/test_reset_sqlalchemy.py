"""Sequence restore and session reset as users meet them: an app's SQLAlchemy engine.

An app that inserts without explicit ids gets id 1 in every test, and the
drivers' own prepared-statement caches (psycopg prepares a query from its
fifth run, asyncpg and SQLAlchemy's asyncpg adapter cache statements) keep
working across tests, because the reset never deallocates them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.ownership import Sandbox
from sqlsandbox.servers import connect_server
from sqlsandbox.sqlalchemy import install

from .conftest import unique_name

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
)

SYNC = {"psycopg": "postgresql+psycopg", "pymysql": "mysql+pymysql", "pysqlite": "sqlite+pysqlite"}
ASYNC = {"asyncpg": "postgresql+asyncpg", "aiomysql": "mysql+aiomysql"}


def _server_db(admin_url: DatabaseURL, scheme: str) -> Iterator[DatabaseURL]:
    server = connect_server(admin_url)
    name = unique_name("rst")
    server.create_database(name)
    try:
        url = server.database_url(name)
        engine = create_engine(url.with_scheme(scheme).render())
        metadata.create_all(engine)
        engine.dispose()
        yield url
    finally:
        server.drop_database(name)
        server.close()


@pytest.fixture(scope="module")
def pg_db(postgres_admin_url: DatabaseURL) -> Iterator[DatabaseURL]:
    yield from _server_db(postgres_admin_url, "postgresql+psycopg")


@pytest.fixture(scope="module")
def maria_db(mariadb_admin_url: DatabaseURL) -> Iterator[DatabaseURL]:
    yield from _server_db(mariadb_admin_url, "mysql+pymysql")


@pytest.fixture(scope="module")
def sqlite_db() -> Iterator[DatabaseURL]:
    with tempfile.TemporaryDirectory(prefix="sqlsandbox_") as tmp:
        url = DatabaseURL(scheme="sqlite", database=str(Path(tmp) / "rst.sqlite3"))
        engine = create_engine(url.with_scheme("sqlite+pysqlite").render())
        metadata.create_all(engine)
        engine.dispose()
        yield url


def _url(request: pytest.FixtureRequest, scheme: str) -> DatabaseURL:
    if scheme.startswith("postgresql"):
        return request.getfixturevalue("pg_db")  # type: ignore[no-any-return]
    if scheme.startswith("mysql"):
        return request.getfixturevalue("maria_db")  # type: ignore[no-any-return]
    return request.getfixturevalue("sqlite_db")  # type: ignore[no-any-return]


@pytest.fixture(params=[pytest.param(s, id=n) for n, s in SYNC.items()])
def app(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Sandbox]]:
    """The app's engine, made at import time, routed through the suite's sandbox."""
    url = _url(request, request.param)
    engine = create_engine(url.with_scheme(request.param).render())
    sandbox = Sandbox(url)
    install(engine, sandbox)
    yield engine, sandbox
    sandbox.close()
    engine.dispose()


@pytest.fixture(params=[pytest.param(s, id=n) for n, s in ASYNC.items()])
def async_url(request: pytest.FixtureRequest) -> str:
    return _url(request, request.param).with_scheme(request.param).render()


def test_an_app_gets_id_1_in_every_test(app: tuple[Any, Sandbox]) -> None:
    engine, sandbox = app
    ids = []
    for _ in range(2):
        owner = sandbox.checkout(lazy=True)
        with engine.begin() as conn:  # the app's own transaction: a savepoint
            ids.append(conn.execute(insert(things).values(name="x")).inserted_primary_key[0])
        sandbox.checkin(owner)
    assert ids == [1, 1]


@pytest.mark.asyncio
async def test_an_async_app_gets_id_1_in_every_test(async_url: str) -> None:
    engine = create_async_engine(async_url)
    sandbox = Sandbox(async_url)
    install(engine, sandbox)
    ids = []
    try:
        for _ in range(2):
            owner = await sandbox.acheckout(lazy=True)
            async with engine.begin() as conn:
                result = await conn.execute(insert(things).values(name="x"))
                ids.append(result.inserted_primary_key[0])
            # A repeated query: SQLAlchemy's asyncpg adapter serves it from its cache.
            async with engine.connect() as conn:
                for _ in range(6):
                    count = text("SELECT count(*) FROM things WHERE name = :n")
                    assert (await conn.execute(count, {"n": "x"})).scalar() == 1
            await sandbox.acheckin(owner)
    finally:
        await sandbox.aclose()
        await engine.dispose()
    assert ids == [1, 1]


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "no-reset"])
def test_psycopg_prepared_statements(pg_db: DatabaseURL, reset: bool) -> None:
    engine = create_engine(pg_db.with_scheme("postgresql+psycopg").render())
    sandbox = Sandbox(pg_db)
    sandbox._reset_session = reset
    install(engine, sandbox)
    count = text("SELECT count(*) FROM things WHERE name = :n")

    def a_test() -> str | None:
        owner = sandbox.checkout(lazy=True)
        try:
            with engine.connect() as conn:
                for _ in range(7):  # psycopg prepares it on the server from the 5th run
                    assert conn.execute(count, {"n": "nobody"}).scalar() == 0
                try:
                    conn.execute(text("PREPARE leftover AS SELECT 1"))
                except Exception as exc:
                    return str(exc)
                return None
        finally:
            sandbox.checkin(owner)

    try:
        assert a_test() is None
        error = a_test()
    finally:
        sandbox.close()
        engine.dispose()
    if reset:
        assert error is None
    else:
        assert error is not None and 'prepared statement "leftover" already exists' in error
