"""Shared fixtures: where the real database servers for the tests are.

PostgreSQL: ``SQLSANDBOX_TEST_POSTGRES_URL``, else a server answering on
127.0.0.1:5432, else the embedded PostgreSQL. MariaDB: ``SQLSANDBOX_TEST_MARIADB_URL``,
else 127.0.0.1:3306, else the MariaDB tests skip saying how to enable them.
SQLite needs nothing.
"""

from __future__ import annotations

import os
import socket

import pytest

from sqlsandbox._urls import DatabaseURL


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url() -> DatabaseURL:
    """URL of a PostgreSQL server the tests may create databases on."""
    explicit = os.environ.get("SQLSANDBOX_TEST_POSTGRES_URL")
    if explicit:
        return DatabaseURL.parse(explicit)
    if _answers("127.0.0.1", 5432):
        return DatabaseURL.parse("postgresql://postgres@127.0.0.1:5432/postgres")
    return _embedded_postgres_url()


def _embedded_postgres_url() -> DatabaseURL:
    """Start (or reuse) the embedded PostgreSQL shared by this test run."""
    pytest.skip("no PostgreSQL on 127.0.0.1:5432 and the embedded server is not wired yet")


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
