"""``@pytest.mark.sandbox(template=..., seed=...)`` on MariaDB and SQLite, serially and under xdist.

The same project as on PostgreSQL (tests/plugin/test_plugin_mark_templates.py),
with the backend's own SQL and client: the marked tests get clones of
templates built once, and after the run the server holds no clone of them,
no half-built template and no owner.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject, drop_registry, registered_elsewhere

# Connects with the backend's own client, from the URL sqlsandbox passes.
DB = """
# project {token}
import sqlite3
from urllib.parse import unquote, urlsplit


def connect(url):
    if url.startswith("sqlite"):
        return sqlite3.connect(unquote(url.split(":///", 1)[1]))
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user=unquote(parts.username or ""),
        password=unquote(parts.password or ""), database=parts.path.lstrip("/"), autocommit=True,
    )


def run(url, sql):
    conn = connect(url)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        rows = cur.fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def tables(url):
    if url.startswith("sqlite"):
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    else:
        sql = "SHOW TABLES"
    return sorted(r[0] for r in run(url, sql))


def names(url, table):
    return [r[0] for r in run(url, f"SELECT name FROM {{table}} ORDER BY id")]


def add(url, table, name):
    run(url, f"INSERT INTO {{table}} (name) VALUES ('{{name}}')")
"""

SEEDS = """
# project {token}
import pathlib

import db

RUNS = pathlib.Path(__file__).with_name("seed-runs.txt")


def note(name):
    with RUNS.open("a") as f:
        f.write(name + "\\n")


def base(url):
    note("base")
    db.add(url, "items", "base")


def gadgets(url):
    note("gadgets")
    db.add(url, "gadgets", "g1")
"""

TESTS = """
# project {token}
import pytest

import db
import seeds


def seed_two(url):
    seeds.note("seed_two")
    db.add(url, "items", "one")
    db.add(url, "items", "two")


def test_the_runs_template(sandbox, db_url):
    assert sandbox.isolation == "transaction"
    assert db.tables(db_url) == ["items"]
    assert db.names(db_url, "items") == ["base"]


@pytest.mark.parametrize("n", range(3))
@pytest.mark.sandbox(template="sql:other/", seed="seeds:gadgets")
def test_another_source_and_seed(sandbox, sqlsandbox_database, db_url, n):
    assert sandbox.isolation == "database" and sandbox.owner is None
    assert sandbox.url != sqlsandbox_database.url
    assert db.tables(db_url) == ["gadgets"]
    # A fresh clone each time: what an earlier test committed is not here.
    assert db.names(db_url, "gadgets") == ["g1"]
    db.add(db_url, "gadgets", f"committed by test {{n}}")


@pytest.mark.sandbox(template="schema")
def test_schema_without_the_runs_seed(db_url):
    assert db.names(db_url, "items") == []


@pytest.mark.sandbox(template="empty")
def test_empty(db_url):
    assert db.tables(db_url) == []


@pytest.mark.sandbox(seed=seed_two)
def test_a_seed_function_of_the_test_module(db_url):
    assert db.names(db_url, "items") == ["one", "two"]
"""

DDL = {
    "mariadb": (
        "CREATE TABLE {table} (id int AUTO_INCREMENT PRIMARY KEY, name varchar(100) NOT NULL);\n"
    ),
    "sqlite": "CREATE TABLE {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, name text NOT NULL);\n",
}


@pytest.fixture(params=["mariadb", "sqlite"])
def backend_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[str, DatabaseURL, str]]:
    """Point inner runs at MariaDB (a registry of their own) or a fresh SQLite directory.

    Yield the backend, the server's URL and the registry's name; afterwards
    drop every database that registry lists, and the registry.
    """
    from sqlsandbox.provision import REGISTRY_DATABASE

    backend = request.param
    if backend == "mariadb":
        url: DatabaseURL = request.getfixturevalue("mariadb_admin_url")
        registry_name = f"sqlsandbox_reg_{uuid.uuid4().hex[:12]}"
        monkeypatch.setenv("SQLSANDBOX_REGISTRY_DATABASE", registry_name)
    else:
        url = DatabaseURL(scheme="sqlite", database=str(tmp_path / "databases"))
        registry_name = REGISTRY_DATABASE
    monkeypatch.setenv("SQLSANDBOX_URL", url.render())
    yield backend, url, registry_name
    drop_registry(url, registry_name)


def _project(
    pytester: pytest.Pytester, make_project: MakeProject, backend: str, tests: str
) -> None:
    token = uuid.uuid4().hex
    make_project(
        'migrate = "sql:migrations/"\nseed = "seeds:base"\n',
        db=DB.format(token=token),
        seeds=SEEDS.format(token=token),
        test_templates=tests.format(token=token),
    )
    pytester.mkdir("migrations").joinpath("001_items.sql").write_text(
        DDL[backend].format(table="items")
    )
    pytester.mkdir("other").joinpath("001_gadgets.sql").write_text(
        DDL[backend].format(table="gadgets")
    )


def _seed_runs(pytester: pytest.Pytester) -> list[str]:
    runs = pytester.path / "seed-runs.txt"
    return sorted(runs.read_text().split()) if runs.exists() else []


def left_behind(url: DatabaseURL, registry_name: str) -> list[str]:
    """Return what a finished run left on the server besides templates and spares.

    Spares are the clones of the run's own template the plugin keeps for the
    next run's workers (docs/provisioning.md); the marks' templates get none.
    Only databases of the fingerprints this registry knows are looked at, and
    not those another registry lists: other runs share the server, and the
    ``empty`` and ``schema`` templates have the same fingerprint in all of them.
    """
    from sqlsandbox.provision import Registry, parse_name
    from sqlsandbox.provision._names import TEMPLATE_KIND
    from sqlsandbox.servers import connect_server

    server = connect_server(url)
    try:
        registry = Registry(server, registry_name).open()
        try:
            rows = registry.databases()
            owners = [f"owner {row.owner_id}" for row in registry.owners()]
        finally:
            registry.close()
        states = {row.name: row.state for row in rows}
        ours = {p.fingerprint for n in states if (p := parse_name(n)) is not None}
        spare_of = {
            p.fingerprint for n, s in states.items() if s == "spare" and (p := parse_name(n))
        }
        left = [f"{n} ({s})" for n, s in states.items() if s not in ("ready", "spare")]
        theirs = registered_elsewhere(server, registry_name)
        for name in server.list_databases():
            parsed = parse_name(name)
            if parsed is None or parsed.fingerprint not in ours or parsed.kind == TEMPLATE_KIND:
                continue
            if states.get(name) == "spare" or name in theirs:
                continue
            left.append(f"{name} ({states.get(name, 'not registered')})")
        # At most one fingerprint (the run's own) has spares.
        if len(spare_of) > 1:
            left.append(f"spares of {len(spare_of)} templates")
        return sorted(left) + owners
    finally:
        server.close()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_marked_templates_on_mariadb_and_sqlite(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    backend_env: tuple[str, DatabaseURL, str],
    workers: list[str],
) -> None:
    backend, url, registry_name = backend_env
    _project(pytester, make_project, backend, TESTS)

    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*- sqlsandbox -*", "tests      database 6"])
    # Each seed ran once, although under -n 2 both workers wanted its template.
    assert _seed_runs(pytester) == ["base", "gadgets", "seed_two"]
    assert left_behind(url, registry_name) == []

    # Unchanged sources: the next run builds nothing and leaves nothing.
    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=7)
    assert _seed_runs(pytester) == ["base", "gadgets", "seed_two"]
    assert left_behind(url, registry_name) == []


FAILING_TESTS = """
# project {token}
import pytest


@pytest.mark.sandbox(template="sql:bad/")
def test_bad_sql(db_url):
    pass


@pytest.mark.sandbox(seed="seeds:broken")
def test_broken_seed(db_url):
    pass


def test_the_runs_template(db_url):
    pass
"""


def test_a_failing_mark_template_on_mariadb_and_sqlite(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    backend_env: tuple[str, DatabaseURL, str],
) -> None:
    backend, url, registry_name = backend_env
    _project(pytester, make_project, backend, FAILING_TESTS)
    pytester.path.joinpath("seeds.py").write_text(
        SEEDS.format(token="failing")
        + "\n\ndef broken(url):\n    raise RuntimeError('the seed data are broken')\n"
    )
    pytester.mkdir("bad").joinpath("001_bad.sql").write_text("CREATE TABLE broken (x nosuchtype(")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "test_templates.py::test_bad_sql: sqlsandbox could not build the template of "
            "@pytest.mark.sandbox(template='sql:bad/'), so this test has no database.",
            "Building the template for * failed in '001_bad.sql' (sql:bad/):",
            # The database's own error.
            "    ProgrammingError: (1064, *SQL syntax*"
            if backend == "mariadb"
            else "    OperationalError: incomplete input",
            "test_templates.py::test_broken_seed: sqlsandbox could not build the template of "
            "@pytest.mark.sandbox(seed='seeds:broken'), so this test has no database.",
            "    RuntimeError: the seed data are broken",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert left_behind(url, registry_name) == []
