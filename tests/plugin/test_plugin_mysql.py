"""``drivers = ["mysql"]`` routes an app that calls PyMySQL or aiomysql itself, on MariaDB.

The project is configured only in ``[tool.sqlsandbox]``; its tests commit
through PyMySQL and must still start from an empty table, serially and under
``-n 2``; an ``isolation="database"`` test may run DDL on its own clone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject, drop_registry

SCHEMA = "CREATE TABLE notes (id int AUTO_INCREMENT PRIMARY KEY, body varchar(200) NOT NULL);\n"

APP = """
import os
from urllib.parse import urlsplit

import pymysql


def connect():
    url = urlsplit(os.environ["DATABASE_URL"])
    return pymysql.connect(
        host=url.hostname, port=url.port or 3306, user=url.username,
        password=url.password or "", database=url.path.lstrip("/"),
    )


def add(body):
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO notes (body) VALUES (%s)", (body,))
        conn.commit()
    finally:
        conn.close()


def count():
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM notes")
            return cur.fetchone()[0]
    finally:
        conn.close()
"""

TESTS = """
import pytest

import app


@pytest.mark.parametrize("n", range(4))
def test_commits_are_undone(n):
    assert app.count() == 0
    for i in range(n + 1):
        app.add(f"note {i}")
    assert app.count() == n + 1


def test_ddl_needs_a_database_of_its_own():
    conn = app.connect()
    with pytest.raises(Exception, match='isolation="database"'):
        conn.cursor().execute("ALTER TABLE notes ADD COLUMN extra integer")
    conn.close()


@pytest.mark.sandbox(isolation="database")
def test_database_isolation_allows_ddl(db_url):
    conn = app.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone()[0] == db_url.rsplit("/", 1)[1]
        cur.execute("ALTER TABLE notes ADD COLUMN extra integer")
    conn.close()


def test_the_workers_database_kept_its_schema():
    conn = app.connect()
    with conn.cursor() as cur:
        cur.execute("SHOW COLUMNS FROM notes")
        assert {row[0] for row in cur.fetchall()} == {"id", "body"}
    conn.close()
    assert app.count() == 0
"""

AIO_APP = """
import os
from urllib.parse import urlsplit

import aiomysql


def kw():
    url = urlsplit(os.environ["DATABASE_URL"])
    return dict(
        host=url.hostname, port=url.port or 3306, user=url.username,
        password=url.password or "", db=url.path.lstrip("/"),
    )


async def add(pool, body):
    async with pool.acquire() as conn:
        async with conn.cursor() as cur:
            await cur.execute("INSERT INTO notes (body) VALUES (%s)", (body,))
        await conn.commit()


async def count(pool):
    async with pool.acquire() as conn:
        async with conn.cursor() as cur:
            await cur.execute("SELECT count(*) FROM notes")
            return (await cur.fetchone())[0]
"""

AIO_TESTS = """
import aiomysql
import pytest
import pytest_asyncio

import app


@pytest_asyncio.fixture
async def pool():
    pool = await aiomysql.create_pool(**app.kw())
    yield pool
    pool.close()
    await pool.wait_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(3))
async def test_commits_are_undone(pool, n):
    assert await app.count(pool) == 0
    for i in range(n + 1):
        await app.add(pool, f"note {i}")
    assert await app.count(pool) == n + 1


@pytest.mark.asyncio
async def test_ddl_needs_a_database_of_its_own(pool):
    async with pool.acquire() as conn:
        with pytest.raises(Exception, match='isolation="database"'):
            await (await conn.cursor()).execute("DROP TABLE notes")
    assert await app.count(pool) == 0
"""


@pytest.fixture
def maria_env(
    monkeypatch: pytest.MonkeyPatch, mariadb_admin_url: DatabaseURL
) -> Iterator[DatabaseURL]:
    """Point inner runs at the test MariaDB with a registry of their own, dropped afterwards."""
    registry_name = f"sqlsandbox_reg_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SQLSANDBOX_URL", mariadb_admin_url.render())
    monkeypatch.setenv("SQLSANDBOX_REGISTRY_DATABASE", registry_name)
    monkeypatch.setenv("DATABASE_URL", "mysql://app:secret@prod.invalid/app")
    yield mariadb_admin_url
    drop_registry(mariadb_admin_url, registry_name)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_drivers_setting_isolates_a_pymysql_app(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    maria_env: DatabaseURL,
    workers: list[str],
) -> None:
    make_project(
        'migrate = "sql:migrations/"\nurl_env = ["DATABASE_URL"]\ndrivers = ["mysql"]\n',
        app=APP,
        test_app=TESTS,
    )
    pytester.mkdir("migrations").joinpath("001_notes.sql").write_text(SCHEMA)
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*- sqlsandbox -*", "tests      transaction 6, database 1"])
    assert "secret" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_drivers_setting_isolates_an_aiomysql_app(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    maria_env: DatabaseURL,
    workers: list[str],
) -> None:
    make_project(
        'migrate = "sql:migrations/"\nurl_env = ["DATABASE_URL"]\ndrivers = ["mysql"]\n',
        app=AIO_APP,
        test_app=AIO_TESTS,
    )
    pytester.mkdir("migrations").joinpath("001_notes.sql").write_text(SCHEMA)
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*- sqlsandbox -*", "tests      transaction 4"])
