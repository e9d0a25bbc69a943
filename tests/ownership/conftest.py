"""Scratch databases on the real servers, and the sandbox under test.

Each xdist worker creates one ``sqlsandbox_<uuid>`` database per backend with
a small schema and drops it at the end. Tests write rows whose names start
with a unique tag and count only those, so tests never see each other.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.ownership import Lease, Sandbox
from sqlsandbox.servers import connect_server

from .adapters import PsycopgConnector, PyMySQLConnector, SQLiteConnector

PG_SCHEMA = [
    "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL UNIQUE)",
    "CREATE TABLE parents (id int PRIMARY KEY)",
    "CREATE TABLE children (id int PRIMARY KEY, parent_id int NOT NULL "
    "REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)",
]
MARIADB_SCHEMA = [
    "CREATE TABLE items (id int AUTO_INCREMENT PRIMARY KEY, name varchar(200) NOT NULL UNIQUE)"
]
SQLITE_SCHEMA = ["CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL UNIQUE)"]


def unique_name(tag: str = "") -> str:
    return f"sqlsandbox_{tag}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_url(postgres_admin_url: DatabaseURL) -> Iterator[DatabaseURL]:
    server = connect_server(postgres_admin_url)
    name = unique_name("own")
    server.create_database(name)
    url = server.database_url(name)
    try:
        with psycopg.connect(url.render(), autocommit=True) as conn:
            for stmt in PG_SCHEMA:
                conn.execute(stmt)
        yield url
    finally:
        server.drop_database(name)
        server.close()


@pytest.fixture(scope="session")
def maria_url(mariadb_admin_url: DatabaseURL) -> Iterator[DatabaseURL]:
    server = connect_server(mariadb_admin_url)
    name = unique_name("own")
    server.create_database(name)
    url = server.database_url(name)
    try:
        conn = pymysql.connect(
            host=url.host, port=url.port or 3306, user=url.username, database=name
        )
        with conn, conn.cursor() as cur:
            for stmt in MARIADB_SCHEMA:
                cur.execute(stmt)
        yield url
    finally:
        server.drop_database(name)
        server.close()


@pytest.fixture(scope="session")
def sqlite_url() -> Iterator[DatabaseURL]:
    with tempfile.TemporaryDirectory(prefix="sqlsandbox_") as tmp:
        path = Path(tmp) / f"{unique_name('own')}.sqlite3"
        with sqlite3.connect(path) as conn:
            for stmt in SQLITE_SCHEMA:
                conn.execute(stmt)
        conn.close()
        yield DatabaseURL(scheme="sqlite", database=str(path))


@dataclass
class Backend:
    """One real database and how to talk to it outside the sandbox."""

    name: str
    url: DatabaseURL
    make_connector: Callable[[DatabaseURL], Any]
    param: str

    def connector(self) -> Any:
        return self.make_connector(self.url)

    def sql(self, text: str) -> str:
        return text.replace("%s", self.param)

    def plain(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run *sql* on a fresh connection outside any sandbox, committing."""
        url = self.url
        if self.name == "postgresql":
            with psycopg.connect(url.render(), autocommit=True) as conn:
                cur = conn.execute(sql, params)  # type: ignore[arg-type]
                return cur.fetchall() if cur.description else []
        if self.name == "sqlite":
            assert url.database is not None
            conn = sqlite3.connect(url.database, isolation_level=None)
            try:
                return conn.execute(self.sql(sql), params).fetchall()
            finally:
                conn.close()
        conn2 = pymysql.connect(
            host=url.host,
            port=url.port or 3306,
            user=url.username,
            database=url.database,
            autocommit=True,
        )
        with conn2, conn2.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def committed(self, tag: str) -> list[str]:
        """Names starting with *tag* that are committed, as another client sees them."""
        rows = self.plain("SELECT name FROM items WHERE name LIKE %s ORDER BY name", (tag + "%",))
        return [r[0] for r in rows]

    def cleanup(self, tag: str) -> None:
        self.plain("DELETE FROM items WHERE name LIKE %s", (tag + "%",))


def execute_raw(raw: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run *sql* on a driver connection of any backend here; return its rows."""
    if isinstance(raw, sqlite3.Connection):
        return raw.execute(sql.replace("%s", "?"), params).fetchall()
    if isinstance(raw, psycopg.Connection):
        cur = raw.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []
    with raw.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def run(lease: Lease, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a lease the way a driver does: in a turn, checked."""
    lease.enter()
    try:
        rows = execute_raw(lease.raw, sql, params)
    except BaseException as exc:
        lease.exit_with(exc)
        raise
    lease.exit(check=True)
    return rows


def insert(lease: Lease, name: str) -> None:
    run(lease, "INSERT INTO items (name) VALUES (%s)", (name,))


def names(lease: Lease, tag: str) -> list[str]:
    rows = run(lease, "SELECT name FROM items WHERE name LIKE %s ORDER BY name", (tag + "%",))
    return [r[0] for r in rows]


@pytest.fixture(
    params=[
        pytest.param("postgresql", id="postgresql"),
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mariadb", id="mariadb"),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "postgresql":
        return Backend("postgresql", request.getfixturevalue("pg_url"), PsycopgConnector, "%s")
    if request.param == "sqlite":
        return Backend("sqlite", request.getfixturevalue("sqlite_url"), SQLiteConnector, "?")
    return Backend("mariadb", request.getfixturevalue("maria_url"), PyMySQLConnector, "%s")


@pytest.fixture
def pg(pg_url: DatabaseURL) -> Backend:
    return Backend("postgresql", pg_url, PsycopgConnector, "%s")


@pytest.fixture
def maria(maria_url: DatabaseURL) -> Backend:
    return Backend("mariadb", maria_url, PyMySQLConnector, "%s")


@pytest.fixture
def tag() -> str:
    """A unique prefix for the rows one test writes."""
    return f"t{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Build sandboxes that are closed after the test."""
    made: list[Sandbox] = []

    def make(url: DatabaseURL | None = None, **options: Any) -> Sandbox:
        sandbox = Sandbox(url, **options)
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.close()


@pytest.fixture
def sandbox(backend: Backend, make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """A manual-mode sandbox on *backend* with its blocking connector registered."""
    box = make_sandbox(backend.url)
    box.add_connector(backend.connector())
    return box


@pytest.fixture
def pg_sandbox(pg: Backend, make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    box = make_sandbox(pg.url)
    box.add_connector(pg.connector())
    return box
