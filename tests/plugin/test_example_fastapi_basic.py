"""Acceptance: examples/fastapi_basic fails in parallel without sqlsandbox and passes with it.

The example is a FastAPI project as many are written (engine built at import
time from DATABASE_URL, tables created at startup, endpoints that commit,
TestClient and AsyncClient tests with hard-coded ids such as ``/items/1``).
Its only sqlsandbox-specific part is ``[tool.sqlsandbox]`` in its
pyproject.toml. Both runs are real pytest processes of this venv's Python
against the test PostgreSQL, from the checkout's root, as a user would type them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/fastapi_basic"
TESTS = 11


def run_example(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", EXAMPLE, "-n", "2", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


@pytest.fixture
def clean_env() -> dict[str, str]:
    """This process's environment without the outer run's pytest and sqlsandbox settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "SQLSANDBOX_")) and name != "DATABASE_URL"
    }


@pytest.fixture
def shared_database(postgres_admin_url: DatabaseURL) -> Iterator[DatabaseURL]:
    """One empty database, as a developer's local database would be."""
    from sqlsandbox.servers import connect_server

    server = connect_server(postgres_admin_url)
    name = f"sqlsandbox_{uuid.uuid4().hex[:12]}"
    server.create_database(name)
    try:
        yield postgres_admin_url.with_database(name)
    finally:
        server.drop_database(name, missing_ok=True)
        server.close()


def test_without_sqlsandbox_the_tests_interfere(
    clean_env: dict[str, str], shared_database: DatabaseURL
) -> None:
    env = {**clean_env, "DATABASE_URL": shared_database.with_scheme("postgresql+psycopg").render()}
    result = run_example("-p", "no:sqlsandbox", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    # Rows of other tests: duplicate names, ids past 1, lists and counts too long.
    assert " failed" in result.stdout.splitlines()[-1], output
    # The plugin was off: no summary block, no database of its own.
    assert re.search(r"^-+ sqlsandbox -+$", result.stdout, re.MULTILINE) is None, output


def test_with_sqlsandbox_the_same_tests_pass(
    clean_env: dict[str, str], postgres_admin_url: DatabaseURL
) -> None:
    env = {
        **clean_env,
        "SQLSANDBOX_URL": postgres_admin_url.render(),
        # What a developer's shell may hold: sqlsandbox must never use it.
        "DATABASE_URL": "postgresql+psycopg://shop:secret@db.invalid:5432/shop",
    }
    result = run_example(env=env)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.OK, output
    assert f"{TESTS} passed" in result.stdout.splitlines()[-1], output
    assert re.search(r"^-+ sqlsandbox -+$", result.stdout, re.MULTILINE), output
    assert "secret" not in output


def test_no_sqlsandbox_turns_off_every_part_of_the_plugin(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    # The plugin's parts (options, database, fixtures, runtime, ...) are registered
    # by its entry point module: blocking the entry point must leave none behind,
    # in the xdist controller and in every worker.
    pytester.makeconftest(
        """
        import os
        import sys
        from pathlib import Path

        def pytest_sessionfinish(session):
            who = os.environ.get("PYTEST_XDIST_WORKER", "main")
            loaded = sorted(m for m in sys.modules if m.startswith("sqlsandbox"))
            Path(session.config.rootpath, f"modules-{who}.txt").write_text(repr(loaded))
        """
    )
    make_project(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:sqlsandbox", "-n", "2")
    result.assert_outcomes(passed=1)
    reports = {p.name: p.read_text() for p in pytester.path.glob("modules-*.txt")}
    assert reports == {"modules-main.txt": "[]", "modules-gw0.txt": "[]", "modules-gw1.txt": "[]"}
    assert "sqlsandbox-" not in result.stdout.str()  # not in the "plugins:" line either

    with_plugin = pytester.runpytest_subprocess()
    with_plugin.stdout.fnmatch_lines(["plugins: *sqlsandbox-*"])
    assert (
        "sqlsandbox.pytest_plugin._runtime"
        in pytester.path.joinpath("modules-main.txt").read_text()
    )
