"""The plugin wires a real database: configuration only, against a real PostgreSQL."""

from __future__ import annotations

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

# The app under test builds its engine at import time, from DATABASE_URL, in
# a module that conftest.py imports: the hardest case for url_env.
APP = """
import os
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

engine = create_engine(os.environ["DATABASE_URL"])
SessionLocal = sessionmaker(engine)
"""

ASYNC_APP = """
import os
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

engine = create_async_engine(os.environ["ASYNC_DATABASE_URL"])
SessionLocal = async_sessionmaker(engine)
"""

MODELS = """
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
"""

CONFIG = """
migrate = "metadata:models:Base.metadata"
url_env = ["DATABASE_URL", "ASYNC_DATABASE_URL"]
engines = ["app:engine"]
"""

SYNC_TESTS = """
import os
import threading

import pytest
from sqlalchemy import func, inspect, select, text

from app import SessionLocal
from models import Item
from sqlsandbox import OwnershipError


def count():
    with SessionLocal() as session:
        return session.scalar(select(func.count()).select_from(Item))


@pytest.mark.parametrize("n", range(4))
def test_commits_are_undone(n):
    assert count() == 0
    with SessionLocal() as session:
        session.add_all([Item(name=f"item {i}") for i in range(n + 1)])
        session.commit()
    assert count() == n + 1


def test_env_points_at_this_workers_database_keeping_each_driver(db_url):
    sync, async_ = os.environ["DATABASE_URL"], os.environ["ASYNC_DATABASE_URL"]
    assert sync.startswith("postgresql+psycopg://") and async_.startswith("postgresql+asyncpg://")
    database = db_url.rsplit("/", 1)[1]
    assert database.startswith("sqlsandbox_") and "_worker_" in database
    assert sync.endswith("/" + database) and async_.endswith("/" + database)


def test_db_session_shares_the_apps_transaction(db_session):
    db_session.add(Item(name="from the fixture"))
    db_session.commit()
    assert count() == 1


@pytest.mark.sandbox(isolation="database")
def test_database_isolation_gets_its_own_clone(db_url, db_session):
    assert "_test_" in db_url
    assert os.environ["DATABASE_URL"].endswith(db_url.rsplit("/", 1)[1])
    db_session.execute(text("ALTER TABLE items ADD COLUMN extra integer"))
    db_session.commit()
    with SessionLocal() as session:
        # The app's engine follows the test to its clone.
        columns = {c["name"] for c in inspect(session.connection()).get_columns("items")}
    assert "extra" in columns


def test_after_a_database_test_env_and_schema_are_back(db_url):
    assert "_worker_" in os.environ["DATABASE_URL"]
    with SessionLocal() as session:
        columns = {c["name"] for c in inspect(session.connection()).get_columns("items")}
    assert "extra" not in columns


def test_a_thread_needs_an_allowance(sandbox):
    errors = []

    def work():
        try:
            count()
        except OwnershipError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=work, name="stray-thread")
    thread.start()
    thread.join()
    assert errors and "stray-thread" in errors[0]

    allowed = threading.Thread(target=lambda: errors.append(count()), name="allowed")
    sandbox.allow(allowed)
    allowed.start()
    allowed.join()
    assert errors[-1] == 0


@pytest.mark.sandbox(mode="shared")
def test_shared_mode_lets_any_thread_in():
    with SessionLocal() as session:
        session.add(Item(name="main"))
        session.commit()
    seen = []
    thread = threading.Thread(target=lambda: seen.append(count()))
    thread.start()
    thread.join()
    assert seen == [1]


def test_not_touching_the_database():
    assert True
"""

UNITTEST_TESTS = """
import unittest

from sqlalchemy import func, select

from app import SessionLocal
from models import Item


class TestWithUnittest(unittest.TestCase):
    def test_one(self):
        self.check_and_add()

    def test_two(self):
        self.check_and_add()

    def check_and_add(self):
        with SessionLocal() as session:
            self.assertEqual(session.scalar(select(func.count()).select_from(Item)), 0)
            session.add(Item(name="unittest"))
            session.commit()
"""


# The app's own settings for inner runs (see server_env in conftest.py).
APP_ENV = {
    "DATABASE_URL": "postgresql+psycopg://app:secret@prod.invalid/app",
    "ASYNC_DATABASE_URL": "postgresql+asyncpg://app:secret@prod.invalid/app",
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_configuration_only_suite(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    workers: list[str],
) -> None:
    make_project(
        CONFIG,
        app=APP,
        models=MODELS,
        conftest="import app  # the app, and its engine, exist before any test\n",
        test_sync=SYNC_TESTS,
        test_unit=UNITTEST_TESTS,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=13)
    result.stdout.fnmatch_lines(
        [
            "*- sqlsandbox -*",
            f"server     {server_env.masked()}, version *",
            "template   *",
            # One clone per worker, one for the isolation="database" test.
            f"clones     {3 if workers else 2}",
            # Every test that touched the database; the others cost nothing.
            "tests      transaction 10, database 1",
            "warm pool  1 taken, *",
        ]
    )
    assert "secret" not in result.stdout.str() + result.stderr.str()


ASYNC_TESTS = """
import unittest

import pytest
from sqlalchemy import func, select

from async_app import SessionLocal
from models import Item


async def count(session):
    return await session.scalar(select(func.count()).select_from(Item))


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(2))
async def test_asyncio_fixture_session(async_db_session, n):
    assert await count(async_db_session) == 0
    async_db_session.add(Item(name="a"))
    await async_db_session.commit()
    assert await count(async_db_session) == 1


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_app_session():
    async with SessionLocal() as session:
        assert await count(session) == 0
        session.add(Item(name="b"))
        await session.commit()


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_again(async_db_session):
    assert await count(async_db_session) == 0


@pytest.mark.anyio
async def test_anyio(async_db_session):
    assert await count(async_db_session) == 0
    async_db_session.add(Item(name="c"))
    await async_db_session.flush()
    assert await count(async_db_session) == 1


@pytest.fixture
def anyio_backend():
    return "asyncio"


class TestIsolatedAsyncio(unittest.IsolatedAsyncioTestCase):
    async def test_one(self):
        await self.check_and_add()

    async def test_two(self):
        await self.check_and_add()

    async def check_and_add(self):
        async with SessionLocal() as session:
            self.assertEqual(await count(session), 0)
            session.add(Item(name="unittest"))
            await session.commit()
"""


def test_async_sessions_with_pytest_asyncio_anyio_and_unittest(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    make_project(
        'migrate = "metadata:models:Base.metadata"\n'
        'url_env = ["ASYNC_DATABASE_URL"]\n'
        'engines = ["async_app:engine"]\n',
        async_app=ASYNC_APP,
        models=MODELS,
        test_async=ASYNC_TESTS,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=7)


def test_lazy_without_configuration(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    # Only a server: the database opens when a test first asks for it.
    make_project(
        test_lazy="""
        from sqlalchemy import text

        def test_without_database():
            pass

        def test_with_database(db_session):
            db_session.execute(text("CREATE TABLE t (x int)"))
            db_session.commit()

        def test_table_is_gone(db_session):
            assert db_session.execute(text("SELECT to_regclass('t')")).scalar() is None
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["tests      transaction 2"])


def test_unreachable_server_stops_the_run_before_the_app_is_imported(
    pytester: pytest.Pytester, make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLSANDBOX_URL", "postgresql://postgres:pw@127.0.0.1:9/postgres")
    make_project(
        'url_env = ["DATABASE_URL"]\n',
        conftest="print('APP IMPORTED')\n",
        test_x="def test_x():\n    pass\n",
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "APP IMPORTED" not in result.stdout.str()
    result.stderr.fnmatch_lines(["ERROR: sqlsandbox: *127.0.0.1:9*"])
    assert ":pw@" not in result.stderr.str()


def test_bad_engine_setting_names_the_engine(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    make_project(
        'engines = ["models:engine"]\n',
        models=MODELS,
        test_x="def test_x():\n    pass\n",
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: sqlsandbox: Module 'models' has no attribute 'engine'*"])


def test_url_env_table_form_and_dotenv(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An app configured by parts, with its dev settings in a .env file that
    # pydantic-settings would read: real env vars set by sqlsandbox win.
    monkeypatch.delenv("DATABASE_URL")
    pytester.path.joinpath(".env").write_text(
        "DATABASE_URL=postgresql+psycopg://dev:devpw@localhost/dev  # local dev\n"
    )
    make_project(
        """
        [tool.sqlsandbox.url_env]
        DATABASE_URL = "{url}"
        POSTGRES_SERVER = "{host}"
        POSTGRES_PORT = "{port}"
        POSTGRES_USER = "{user}"
        POSTGRES_DB = "{database}"
        """,
        test_env="""
        import os

        def test_parts(db_url):
            database = db_url.rsplit("/", 1)[1]
            assert os.environ["POSTGRES_DB"] == database
            assert os.environ["POSTGRES_SERVER"] == "127.0.0.1"
            assert os.environ["POSTGRES_PORT"] == "__PORT__"
            assert os.environ["POSTGRES_USER"] == "postgres"
            # The form written in .env (the psycopg driver) is kept.
            assert os.environ["DATABASE_URL"].startswith("postgresql+psycopg://postgres@127.0.0.1")
            assert os.environ["DATABASE_URL"].endswith("/" + database)
        """.replace("__PORT__", str(server_env.port)),
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "sqlsandbox: DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:"
            f"{server_env.port}/sqlsandbox_*",
            "sqlsandbox: POSTGRES_SERVER=127.0.0.1",
        ]
    )


def test_run_start_reaps_dead_runs_in_its_registry(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    inner_registry: str,
) -> None:
    import socket
    import subprocess
    import sys
    import uuid

    from sqlsandbox.provision import Registry, make_name
    from sqlsandbox.provision._registry import Owner
    from sqlsandbox.servers import connect_server

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    server = connect_server(server_env)
    registry = Registry(server, inner_registry).open()
    owner = Owner(uuid.uuid4().hex, "crashed-run", socket.gethostname(), dead.pid, 0)
    registry.add_owner(owner)
    leftover = make_name(uuid.uuid4().hex * 2, "test")
    registry.add_database(
        leftover, fingerprint="0" * 64, kind="test", state="clone", owner_id=owner.owner_id
    )
    server.create_database(leftover)
    try:
        make_project(test_x="def test_x(db_url):\n    pass\n")
        result = pytester.runpytest_subprocess("-p", "no:randomly")
        result.assert_outcomes(passed=1)
        assert not server.database_exists(leftover)
        # The run used the registry it was given.
        assert any(row.state == "ready" for row in registry.databases())
    finally:
        server.drop_database(leftover, missing_ok=True)
        registry.close()
        server.close()


CONTROLLER_CONFTEST = """
import os
import pathlib

# What an app reading DATABASE_URL at import time would connect to, per process.
who = os.environ.get("PYTEST_XDIST_WORKER", "controller")
pathlib.Path(f"url-{who}.txt").write_text(os.environ["DATABASE_URL"])
"""


def test_xdist_controller_points_url_env_at_a_clone_of_its_own(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    make_project(
        'url_env = ["DATABASE_URL"]\n',
        conftest=CONTROLLER_CONFTEST,
        test_x="def test_x():\n    pass\n\ndef test_y():\n    pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2")
    result.assert_outcomes(passed=2)
    controller = (pytester.path / "url-controller.txt").read_text()
    worker = (pytester.path / "url-gw0.txt").read_text()
    # Never the user's database (prod.invalid), never the template: a clone of its own.
    assert controller.startswith(
        f"postgresql+psycopg://postgres@127.0.0.1:{server_env.port}/sqlsandbox_"
    )
    assert "_controller_" in controller
    assert "_worker_" in worker
    # And it is gone after the run.
    from sqlsandbox.servers import connect_server

    server = connect_server(server_env)
    try:
        assert not server.database_exists(controller.rsplit("/", 1)[1])
    finally:
        server.close()


def test_budget_settings_reach_the_check(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    make_project(
        "connections_per_worker = 100000\nreserve_connections = 0\n",
        test_x="def test_x(db_url):\n    pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.INTERRUPTED or result.ret == pytest.ExitCode.TESTS_FAILED
    assert "need 1 x 100005" in result.stdout.str() + result.stderr.str()


def test_setup_empty_builds_no_schema(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    make_project(
        'migrate = "metadata:models:Base.metadata"\nsetup = "empty"\n',
        models=MODELS,
        test_x="""
        from sqlalchemy import text

        def test_no_table(db_session):
            assert db_session.execute(text("SELECT to_regclass('items')")).scalar() is None
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)


HARD_CODED_IDS = """
import pytest
from app import SessionLocal
from models import Item


@pytest.mark.parametrize("n", range(3))
def test_first_insert_gets_id_1(n):
    with SessionLocal() as session:
        item = Item(name="x")
        session.add(item)
        session.commit()
        assert item.id == 1
"""


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "no-reset"])
def test_reset_sequences_setting_reaches_the_sandbox(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL, reset: bool
) -> None:
    make_project(CONFIG, app=APP, models=MODELS, test_ids=HARD_CODED_IDS)
    flag = "--sqlsandbox-reset-sequences" if reset else "--sqlsandbox-no-reset-sequences"
    result = pytester.runpytest_subprocess("-p", "no:randomly", flag)
    if reset:
        result.assert_outcomes(passed=3)
    else:
        # Sequences keep counting through the rollbacks: only the first test gets id 1.
        result.assert_outcomes(passed=1, failed=2)


ALEMBIC_ENV = """
from alembic import context
from sqlalchemy import create_engine

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

ALEMBIC_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("widgets")
"""


def test_alembic_config_setting_names_the_ini_file(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL
) -> None:
    make_project(
        'migrate = "alembic"\nalembic_config = "db/alembic.ini"\n',
        test_x="""
        from sqlalchemy import text

        def test_migrated(db_session):
            assert db_session.execute(text("SELECT to_regclass('widgets')")).scalar() == "widgets"
        """,
    )
    versions = pytester.path / "db" / "migrations" / "versions"
    versions.mkdir(parents=True)
    (pytester.path / "db" / "alembic.ini").write_text(
        "[alembic]\nscript_location = db/migrations\n"
    )
    (versions.parent / "env.py").write_text(ALEMBIC_ENV)
    (versions / "0001_widgets.py").write_text(ALEMBIC_REVISION)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
