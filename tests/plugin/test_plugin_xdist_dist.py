"""pytest-xdist's ``--dist`` modes other than ``load``: isolation holds, nothing is left.

Every mode hands tests to the workers differently (by module or class, by
file, by stealing, by ``xdist_group``), so a module's tests may run on one
worker or on both, in any order. Whatever the split, each test must start
from its worker's clone holding only the session's and its module's data,
and after the run the server must hold nothing of the run but its template.
"""

from __future__ import annotations

import uuid

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject, registered_elsewhere

CONFIG = """
migrate = "sql:migrations/"
url_env = ["DATABASE_URL"]
engines = ["app:engine"]
"""

APP = """
import os

from sqlalchemy import create_engine

engine = create_engine(os.environ["DATABASE_URL"])
"""

CONFTEST = """
import pytest
from sqlalchemy import text

import app


@pytest.fixture(scope="session", autouse=True)
def session_row():
    # Committed into this worker's clone, for the whole run.
    with app.engine.begin() as conn:
        conn.execute(text("INSERT INTO items (name) VALUES ('session')"))


def names():
    with app.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT name FROM items ORDER BY id"))]


def add(name):
    with app.engine.begin() as conn:
        conn.execute(text("INSERT INTO items (name) VALUES (:name)"), {"name": name})
"""

# One module; the suite has three copies of it. {module} is its name.
MODULE = """
# project {token}
import pytest

from conftest import add, names


@pytest.fixture(scope="module")
def module_rows():
    # Rolled back when the module ends, on whichever worker set it up.
    add("module {module}")
    return ["session", "module {module}"]


@pytest.mark.parametrize("n", range(4))
def test_function(module_rows, n):
    assert names() == module_rows
    add("test {module} function %d" % n)
    assert names() == [*module_rows, "test {module} function %d" % n]


class TestClass:
    @pytest.mark.parametrize("n", range(3))
    def test_method(self, module_rows, n):
        assert names() == module_rows
        add("test {module} method %d" % n)
        assert len(names()) == len(module_rows) + 1


@pytest.mark.xdist_group("grouped")
@pytest.mark.parametrize("n", range(2))
def test_grouped(module_rows, n):
    assert names() == module_rows
    add("test {module} grouped %d" % n)


@pytest.mark.sandbox(isolation="database")
def test_own_database():
    # A fresh clone of the template: neither session nor module data.
    assert names() == []
    add("test {module} own database")
    assert names() == ["test {module} own database"]


def test_without_the_module_fixture():
    # Inside the module's scope if this worker set the fixture up, else not.
    assert names() in (["session"], ["session", "module {module}"])
    add("test {module} plain")
"""

TESTS_PER_MODULE = 4 + 3 + 2 + 1 + 1


# The app's own settings for inner runs (see server_env in conftest.py).
APP_ENV = {
    "DATABASE_URL": "postgresql+psycopg://app:secret@prod.invalid/app",
}


def _fingerprints(url: DatabaseURL, registry_name: str) -> set[str]:
    """Return the short fingerprints the registry knows of."""
    from sqlsandbox.provision import Registry
    from sqlsandbox.servers import connect_server

    server = connect_server(url)
    registry = Registry(server, registry_name).open()
    try:
        return {row.fingerprint[:12] for row in registry.databases()}
    finally:
        registry.close()
        server.close()


def _leftovers(url: DatabaseURL, registry_name: str, known: set[str]) -> list[str]:
    """Return what is left of an inner run: clones, owners, unregistered databases.

    Complete templates stay by design (the next run reuses them), and so do
    the spare clones a run leaves for the next one, and the registry itself.
    Databases are checked only for fingerprints not in ``known`` (the ones
    the registry held before the run): other workers of the outer run build
    the same templates in registries of their own, at the same time.
    """
    from sqlsandbox.provision import Registry, parse_name, reap
    from sqlsandbox.servers import connect_server

    server = connect_server(url)
    registry = Registry(server, registry_name).open()
    try:
        rows = registry.databases()
        left = [f"{row.name} ({row.state})" for row in rows if row.state not in ("ready", "spare")]
        left += [f"owner {row.owner_id} ({row.run_id})" for row in registry.owners()]
        # What `sqlsandbox reap` would drop.
        left += [f"reapable {name}" for name in reap(server, registry, dry_run=True).dropped]
        # Clones of these templates that the registry lost track of.
        fingerprints = {row.fingerprint[:12] for row in rows} - known
        registered = {row.name for row in rows} | registered_elsewhere(server, registry_name)
        for name in server.list_databases():
            parsed = parse_name(name)
            if parsed and parsed.fingerprint in fingerprints and name not in registered:
                left.append(f"unregistered {name}")
        return left
    finally:
        registry.close()
        server.close()


@pytest.mark.parametrize("dist", ["loadscope", "loadfile", "worksteal", "loadgroup"])
def test_dist_mode_keeps_tests_isolated_and_leaves_nothing(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    inner_registry: str,
    dist: str,
) -> None:
    token = uuid.uuid4().hex
    modules = {f"test_{name}": MODULE.format(module=name, token=token) for name in ("a", "b", "c")}
    make_project(CONFIG, app=APP, conftest=CONFTEST, **modules)
    pytester.mkdir("migrations").joinpath("001_items.sql").write_text(
        # The token makes this run's fingerprint its own: other tests on other
        # workers build templates of the same table in registries of their own.
        f"-- run {token}\nCREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n"
    )

    known = _fingerprints(server_env, inner_registry)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2", "--dist", dist)

    result.assert_outcomes(passed=3 * TESTS_PER_MODULE)
    result.stdout.fnmatch_lines([f"2 workers [{3 * TESTS_PER_MODULE} items]"])
    assert "secret" not in result.stdout.str() + result.stderr.str()
    assert _leftovers(server_env, inner_registry, known) == []
