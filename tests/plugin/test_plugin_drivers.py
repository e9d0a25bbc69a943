"""The ``drivers`` setting routes apps that call asyncpg or psycopg themselves.

Each project is configured only in ``[tool.sqlsandbox]`` (``drivers`` plus
``url_env``): no conftest.py, no fixture installing routes. Its tests commit
through the driver and must still start from an empty table, serially and
under ``-n 2``; an ``isolation="database"`` test reaches its own clone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlsandbox import ConfigError
from sqlsandbox._settings import load_settings
from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

SCHEMA = "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\n"

ASYNCPG_APP = """
import os

import asyncpg


async def make_pool():
    return await asyncpg.create_pool(os.environ["DATABASE_URL"])


async def add(pool, body):
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO notes (body) VALUES ($1)", body)


async def count(pool):
    return await pool.fetchval("SELECT count(*) FROM notes")
"""

ASYNCPG_TESTS = """
import os

import asyncpg
import pytest
import pytest_asyncio

import app


@pytest_asyncio.fixture
async def pool():
    pool = await app.make_pool()
    yield pool
    await pool.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(4))
async def test_commits_are_undone(pool, n):
    assert await app.count(pool) == 0
    for i in range(n + 1):
        await app.add(pool, f"note {i}")
    assert await app.count(pool) == n + 1


@pytest.mark.asyncio
async def test_a_new_connection_sees_what_the_pool_committed(pool):
    await app.add(pool, "committed")
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        assert await conn.fetchval("SELECT body FROM notes") == "committed"
    finally:
        await conn.close()


@pytest.mark.sandbox(isolation="database")
@pytest.mark.asyncio
async def test_database_isolation_reaches_its_own_clone(db_url):
    clone = db_url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        assert await conn.fetchval("SELECT current_database()") == clone
        await conn.execute("ALTER TABLE notes ADD COLUMN extra integer")
        await conn.execute("INSERT INTO notes (body, extra) VALUES ('ddl', 1)")
    finally:
        await conn.close()
    # Plain connections: what the first one wrote is really committed there.
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        assert await conn.fetchval("SELECT count(*) FROM notes WHERE extra = 1") == 1
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_the_workers_database_kept_its_schema(pool):
    columns = await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes'"
    )
    assert {row["column_name"] for row in columns} == {"id", "body"}
    assert await app.count(pool) == 0
"""

PSYCOPG_APP = """
import os

import psycopg


def add(body):
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("INSERT INTO notes (body) VALUES (%s)", (body,))


def count():
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        return conn.execute("SELECT count(*) FROM notes").fetchone()[0]
"""

PSYCOPG_TESTS = """
import os

import psycopg
import pytest

import app


@pytest.mark.parametrize("n", range(4))
def test_commits_are_undone(n):
    assert app.count() == 0
    for i in range(n + 1):
        app.add(f"note {i}")
    assert app.count() == n + 1


def test_a_rollback_undoes_only_the_apps_transaction():
    app.add("kept")
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('dropped')")
        conn.rollback()
    assert app.count() == 1


@pytest.mark.sandbox(isolation="database")
def test_database_isolation_reaches_its_own_clone(db_url):
    clone = db_url.rsplit("/", 1)[1]
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == clone
        conn.execute("ALTER TABLE notes ADD COLUMN extra integer")
        conn.execute("INSERT INTO notes (body, extra) VALUES ('ddl', 1)")
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM notes WHERE extra = 1").fetchone()[0] == 1


def test_the_workers_database_kept_its_schema():
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes'"
        ).fetchall()
    assert {row[0] for row in columns} == {"id", "body"}
    assert app.count() == 0
"""


# The app's own settings for inner runs (see server_env in conftest.py).
# Plain postgresql://, the form both asyncpg and psycopg take; url_env keeps it.
APP_ENV = {
    "DATABASE_URL": "postgresql://app:secret@prod.invalid/app",
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
@pytest.mark.parametrize(
    ("driver", "app", "tests"),
    [
        pytest.param("asyncpg", ASYNCPG_APP, ASYNCPG_TESTS, id="asyncpg"),
        pytest.param("psycopg", PSYCOPG_APP, PSYCOPG_TESTS, id="psycopg"),
    ],
)
def test_drivers_setting_isolates_a_plain_driver_app(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    workers: list[str],
    driver: str,
    app: str,
    tests: str,
) -> None:
    make_project(
        f'migrate = "sql:migrations/"\nurl_env = ["DATABASE_URL"]\ndrivers = ["{driver}"]\n',
        app=app,
        test_app=tests,
    )
    pytester.mkdir("migrations").joinpath("001_notes.sql").write_text(SCHEMA)
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*- sqlsandbox -*", "tests      transaction 6, database 1"])
    assert "secret" not in result.stdout.str() + result.stderr.str()


def test_without_the_setting_commits_leak_into_the_next_test(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    # The same psycopg app with no route: the suite above would fail.
    make_project('migrate = "sql:migrations/"\nurl_env = ["DATABASE_URL"]\n', app=PSYCOPG_APP)
    pytester.makepyfile(
        test_app="""
        import pytest
        import app

        @pytest.mark.parametrize("n", range(2))
        def test_commits_are_undone(n):
            assert app.count() == 0
            app.add("x")
        """
    )
    pytester.mkdir("migrations").joinpath("001_notes.sql").write_text(SCHEMA)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)


def test_a_bad_driver_name_stops_the_run(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    make_project('drivers = ["asyncpg", "oracle"]\n', test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    stderr = result.stderr.str()
    assert "ERROR: sqlsandbox: Invalid value for setting 'drivers' from [tool.sqlsandbox]" in stderr
    assert "Allowed: a list of driver names: 'asyncpg', 'psycopg', 'sqlite', 'mysql'" in stderr
    assert "'oracle' is not one of 'asyncpg', 'psycopg', 'sqlite', 'mysql'" in stderr


@pytest.mark.parametrize("source", ["env", "flag"])
def test_drivers_from_env_and_flags(tmp_path: Path, source: str) -> None:
    env = {"SQLSANDBOX_DRIVERS": "asyncpg, psycopg"} if source == "env" else {}
    flags = {"drivers": "asyncpg,psycopg"} if source == "flag" else {}
    assert load_settings(tmp_path, env, flags).drivers == ("asyncpg", "psycopg")
    with pytest.raises(ConfigError, match=r"'pymysql' is not one of 'asyncpg', 'psycopg'"):
        load_settings(tmp_path, {"SQLSANDBOX_DRIVERS": "pymysql"}, {})


def test_a_driver_of_another_backend_is_refused(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    make_project(
        'url_env = ["DATABASE_URL"]\ndrivers = ["sqlite"]\n', test_x="def test_x():\n    pass\n"
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: sqlsandbox: Setting 'drivers' names 'sqlite', which needs a sqlite server, "
            f"but sqlsandbox's server is {server_env.masked()}*"
        ]
    )
