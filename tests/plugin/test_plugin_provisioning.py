"""What provisioning leaves in the test run: no app state from the build, nothing at collection."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

# An app installed like a package (outside the project, on the path), shaped
# like many real ones: the package imports its settings, the settings read
# DATABASE_URL once, the engine is built at import, and the seed uses the app.
SHOP = {
    "__init__.py": "from .settings import SETTINGS as SETTINGS\n",
    "settings.py": """
        import os

        SETTINGS = {"database_url": os.environ.get("DATABASE_URL", "unset")}
    """,
    "db.py": """
        from sqlalchemy import create_engine

        from .settings import SETTINGS

        engine = create_engine(SETTINGS["database_url"])
    """,
    "seed.py": """
        import psycopg

        from . import db  # noqa: F401 - a seed script that imports the app


        def load(url):
            with psycopg.connect(url) as conn:
                conn.execute("INSERT INTO items (name) VALUES ('seeded')")
    """,
}

SHOP_TESTS = """
import os

from sqlalchemy import text

import shop
import shop.db


def test_the_app_was_imported_with_this_workers_database(db_url):
    name = db_url.rsplit("/", 1)[1]
    assert "_worker_" in name
    assert shop.SETTINGS["database_url"].rsplit("/", 1)[1] == name
    assert shop.db.engine.url.database == name
    assert os.environ["DATABASE_URL"].rsplit("/", 1)[1] == name


def test_the_seed_ran_into_the_template(db_session):
    assert db_session.execute(text("SELECT name FROM items")).scalars().all() == ["seeded"]
"""


def _installed_app(lib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write the ``shop`` package in *lib* (outside the project) and put it on the path."""
    (lib / "shop").mkdir(parents=True)
    for name, source in SHOP.items():
        (lib / "shop" / name).write_text(textwrap.dedent(source))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(lib), os.environ.get("PYTHONPATH")]))
    )


# The app's own settings for inner runs (see server_env in conftest.py).
APP_ENV = {
    "DATABASE_URL": "postgresql+psycopg://app:secret@prod.invalid/app",
}


def _migrations(pytester: pytest.Pytester) -> None:
    """One SQL migration; a comment makes its fingerprint (and so its template) new."""
    folder = pytester.path / "migrations"
    folder.mkdir()
    (folder / "001_items.sql").write_text(
        f"-- {uuid.uuid4().hex}\nCREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT);\n"
    )


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_building_the_template_leaves_no_app_state_behind(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[str],
) -> None:
    _installed_app(tmp_path_factory.mktemp("site"), monkeypatch)
    _migrations(pytester)
    make_project(
        'migrate = "sql:migrations/"\nseed = "shop.seed:load"\nurl_env = ["DATABASE_URL"]\n'
        'engines = ["shop.db:engine"]\n',
        conftest="import shop.db  # the app, and its engine, exist before any test\n",
        test_shop=SHOP_TESTS,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=2)
    # The template was built by this run (its fingerprint is new), not found.
    assert "running seed shop.seed:load" in result.stderr.str()


COLLECTION_CONFTEST = """
import os
import pathlib

pathlib.Path("url-at-collection.txt").write_text(os.environ["DATABASE_URL"])
"""


@pytest.mark.parametrize("flag", ["--collect-only", "--fixtures"])
def test_listing_tests_builds_and_clones_nothing(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    inner_registry: str,
    flag: str,
) -> None:
    _migrations(pytester)
    make_project(
        'migrate = "sql:migrations/"\nurl_env = ["DATABASE_URL"]\n',
        conftest=COLLECTION_CONFTEST,
        test_x="def test_x(db_url):\n    pass\n",
    )
    from sqlsandbox.provision import Registry
    from sqlsandbox.servers import connect_server

    server = connect_server(server_env)
    try:
        registry = Registry(server, inner_registry).open()
        before = {row.name for row in registry.databases()}
        result = pytester.runpytest_subprocess("-p", "no:randomly", flag)
        after = {row.name for row in registry.databases()}
        registry.close()
    finally:
        server.close()
    assert result.ret == pytest.ExitCode.OK
    assert after == before
    assert "building template" not in result.stderr.str()
    # The app still imported without its own URL: it names a database that does not exist.
    seen = (pytester.path / "url-at-collection.txt").read_text()
    assert seen.endswith("/sqlsandbox_database_not_ready_yet")
    assert "prod.invalid" not in seen


DATABASE_TESTS = """
import pytest
from sqlalchemy import text


@pytest.mark.parametrize("n", range(12))
def test_each_gets_a_fresh_database(db_session, n):
    assert db_session.execute(text("SELECT count(*) FROM items")).scalar() == 0
    db_session.execute(text("INSERT INTO items (name) VALUES ('mine')"))
    db_session.commit()
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_clone_per_test_with_drops_side_by_side(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    inner_registry: str,
    workers: list[str],
) -> None:
    # More tests than a drop batch: used clones are dropped in batches while tests
    # run, by sqlsandbox's own threads (the leak check of the run must not flag them).
    _migrations(pytester)
    make_project('migrate = "sql:migrations/"\nisolation = "database"\n', test_db=DATABASE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=12)
    from sqlsandbox.provision import Registry
    from sqlsandbox.servers import connect_server

    server = connect_server(server_env)
    try:
        registry = Registry(server, inner_registry).open()
        # Every clone of the run is gone with it; templates stay, and spares for the next run.
        assert {row.state for row in registry.databases()} <= {"ready", "spare"}
        registry.close()
    finally:
        server.close()


def test_the_next_run_takes_the_clone_this_run_left(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    inner_registry: str,
) -> None:
    _migrations(pytester)
    make_project(
        'migrate = "sql:migrations/"\n',
        test_x="""
        import pathlib

        def test_x(db_url):
            pathlib.Path("used.txt").write_text(db_url.rsplit("/", 1)[1])
        """,
    )
    from sqlsandbox.provision import Registry
    from sqlsandbox.servers import connect_server

    server = connect_server(server_env)
    registry = Registry(server, inner_registry).open()
    try:
        spares = []
        used = []
        for _ in range(2):
            pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)
            used.append((pytester.path / "used.txt").read_text())
            ours = used[0].split("_worker_")[0]  # sqlsandbox_<fingerprint>: this project's
            spares.append(
                [r.name for r in registry.databases() if r.state == "spare" and ours in r.name]
            )
    finally:
        registry.close()
        server.close()
    # Each run leaves one clone, made while its tests ran, for the next run; the
    # next run's tests use it (no CREATE DATABASE before they start).
    assert len(spares[0]) == len(spares[1]) == 1
    assert used[1] == spares[0][0]
    assert spares[1] != spares[0]


# The controller's hook runs before xdist's own (which tells the workers to shut
# down): what the workers made and still hold is on the server then.
CONTROLLER_SEES = """
import os
import pathlib

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    from sqlsandbox.provision import Registry
    from sqlsandbox.servers import connect_server

    server = connect_server(os.environ["SQLSANDBOX_URL"])
    registry = Registry(server, os.environ["SQLSANDBOX_REGISTRY_DATABASE"]).open()
    held = sorted(
        row.kind for row in registry.databases() if row.state == "clone" and row.owner_id
    )
    registry.close()
    server.close()
    pathlib.Path("held.txt").write_text(" ".join(held))
"""


def test_workers_drop_their_clones_before_they_report_finished(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    inner_registry: str,
) -> None:
    # xdist interrupts workers ~5 s after the controller is done: drops left for
    # then could be cut off, leaving the controller's reap to find them.
    _migrations(pytester)
    make_project(
        'migrate = "sql:migrations/"\nisolation = "database"\n',
        conftest=CONTROLLER_SEES,
        test_db=DATABASE_TESTS,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2")
    result.assert_outcomes(passed=12)
    # Without url_env the controller makes no clone: nothing is held by then.
    assert (pytester.path / "held.txt").read_text() == ""
    assert "left by dead runs" not in result.stderr.str() + result.stdout.str()
