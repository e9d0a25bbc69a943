"""``@pytest.mark.sandbox(template=..., seed=...)``: a database from another template.

A test whose mark names another setup, migrate source or seed gets a clone
of its own (``isolation="database"``) of a template built from the run's
settings with the mark's changes, once per fingerprint, across xdist workers
and across runs.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.provision import TemplateSpec
from sqlsandbox.pytest_plugin._marks import SandboxSpec, mark_template, validate_sandbox

from .conftest import MakeProject

# Each project gets a token of its own in its sources, so its templates are
# its own (the same sources would reuse another test's templates).
SEEDS = """
# project {token}
import pathlib

import psycopg

RUNS = pathlib.Path(__file__).with_name("seed-runs.txt")


def note(name):
    with RUNS.open("a") as f:
        f.write(name + "\\n")


def base(url):
    note("base")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO items (name) VALUES ('base')")


def gadgets(url):
    note("gadgets")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO gadgets (name) VALUES ('g1')")


def broken(url):
    note("broken")
    raise RuntimeError("the seed data are broken")
"""

TESTS = """
# project {token}
import psycopg
import pytest

import seeds


def names(url, table):
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(f"SELECT name FROM {{table}} ORDER BY id")]


def tables(url):
    with psycopg.connect(url) as conn:
        sql = "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'"
        return sorted(r[0] for r in conn.execute(sql))


def add(url, table, name):
    with psycopg.connect(url) as conn:
        conn.execute(f"INSERT INTO {{table}} (name) VALUES (%s)", [name])


def seed_two(url):
    seeds.note("seed_two")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO items (name) VALUES ('one'), ('two')")


def test_the_runs_template(sandbox, db_url):
    assert sandbox.isolation == "transaction"
    assert tables(db_url) == ["items"]
    assert names(db_url, "items") == ["base"]


@pytest.mark.parametrize("n", range(3))
@pytest.mark.sandbox(template="sql:other/", seed="seeds:gadgets")
def test_another_source_and_seed(sandbox, sqlsandbox_database, db_url, n):
    assert sandbox.isolation == "database" and sandbox.owner is None
    assert sandbox.url != sqlsandbox_database.url
    assert tables(db_url) == ["gadgets"]
    # A fresh clone each time: what an earlier test committed is not here.
    assert names(db_url, "gadgets") == ["g1"]
    add(db_url, "gadgets", f"committed by test {{n}}")


@pytest.mark.sandbox(template="schema")
def test_schema_without_the_runs_seed(db_url):
    assert names(db_url, "items") == []


@pytest.mark.sandbox(template="empty")
def test_empty(db_url):
    assert tables(db_url) == []


@pytest.mark.sandbox(seed=seed_two)
def test_a_seed_function_of_the_test_module(db_url):
    assert names(db_url, "items") == ["one", "two"]
"""


def _project(pytester: pytest.Pytester, make_project: MakeProject, tests: str) -> None:
    token = uuid.uuid4().hex
    make_project(
        'migrate = "sql:migrations/"\nseed = "seeds:base"\n',
        seeds=SEEDS.format(token=token),
        test_templates=tests.format(token=token),
    )
    pytester.mkdir("migrations").joinpath("001_items.sql").write_text(
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n"
    )
    pytester.mkdir("other").joinpath("001_gadgets.sql").write_text(
        "CREATE TABLE gadgets (id serial PRIMARY KEY, name text NOT NULL);\n"
    )


def _seed_runs(pytester: pytest.Pytester) -> list[str]:
    runs = pytester.path / "seed-runs.txt"
    return sorted(runs.read_text().split()) if runs.exists() else []


def _leftovers(url: DatabaseURL, registry_name: str) -> list[str]:
    """Return what the registry still lists apart from complete templates and spare clones."""
    from sqlsandbox.provision import Registry
    from sqlsandbox.servers import connect_server

    server = connect_server(url)
    registry = Registry(server, registry_name).open()
    try:
        rows = [
            f"{row.name} ({row.state})"
            for row in registry.databases()
            if row.state not in ("ready", "spare")
        ]
        return rows + [f"owner {row.owner_id}" for row in registry.owners()]
    finally:
        registry.close()
        server.close()


def test_marked_tests_get_clones_of_templates_built_once(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    inner_registry: str,
) -> None:
    _project(pytester, make_project, TESTS)

    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*- sqlsandbox -*", "tests      database 6"])
    # Four templates (the run's, the other source with its seed, the run's
    # migrations with the test module's seed, and the schema and empty ones),
    # each seed ran once although two workers wanted three of the clones.
    assert _seed_runs(pytester) == ["base", "gadgets", "seed_two"]
    assert _leftovers(server_env, inner_registry) == []

    # Unchanged sources: the next run builds nothing.
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=7)
    assert _seed_runs(pytester) == ["base", "gadgets", "seed_two"]
    assert _leftovers(server_env, inner_registry) == []


FAILING_TESTS = """
# project {token}
import pytest

@pytest.mark.parametrize("n", range(2))
@pytest.mark.sandbox(template="sql:bad/")
def test_bad_sql(db_url, n):
    pass

@pytest.mark.parametrize("n", range(2))
@pytest.mark.sandbox(seed="seeds:broken")
def test_broken_seed(db_url, n):
    pass

def test_the_runs_template(db_url):
    pass

@pytest.mark.sandbox(template="sql:other/")
def test_another_template(db_url):
    pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_marked_template_that_fails_to_build_errors_its_tests_only(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    server_env: DatabaseURL,
    inner_registry: str,
    workers: list[str],
) -> None:
    _project(pytester, make_project, FAILING_TESTS)
    bad = pytester.mkdir("bad")
    bad.joinpath("001_ok.sql").write_text("CREATE TABLE fine (id serial PRIMARY KEY);\n")
    bad.joinpath("002_broken.sql").write_text("CREATE TABLE broken (id serial, x nosuchtype);\n")

    result = pytester.runpytest_subprocess("-p", "no:randomly", *workers)
    result.assert_outcomes(passed=2, errors=4)
    # One message per test, without a traceback through sqlsandbox: the test, its
    # mark, the failing migration or seed, and the database's (or seed's) error.
    result.stdout.fnmatch_lines_random(
        [
            f"test_templates.py::test_bad_sql[[]{n}[]]: sqlsandbox could not build the template "
            "of @pytest.mark.sandbox(template='sql:bad/'), so this test has no database."
            for n in range(2)
        ]
        + [
            f"test_templates.py::test_broken_seed[[]{n}[]]: sqlsandbox could not build the "
            "template of @pytest.mark.sandbox(seed='seeds:broken'), so this test has no database."
            for n in range(2)
        ]
        + [
            "Building the template for * failed in '002_broken.sql' (sql:bad/):",
            '    UndefinedObject: type "nosuchtype" does not exist',
            "Building the template for * failed in 'seed seeds:broken' (*):",
            "    RuntimeError: the seed data are broken",
        ]
    )
    output = result.stdout.str()
    assert "Traceback" not in output and "_template.py" not in output
    # A failed build is not tried again for the next test (of this process) that needs it.
    assert _seed_runs(pytester).count("broken") in ((1, 2) if workers else (1,))
    assert _leftovers(server_env, inner_registry) == []


BAD_MARKS = {
    "test_with_transaction": """
        import pytest

        @pytest.mark.sandbox(isolation="transaction", template="schema")
        def test_it():
            pass
        """,
    "test_module_none": """
        import pytest

        pytestmark = pytest.mark.sandbox(isolation="none")

        @pytest.mark.sandbox(template="empty")
        def test_it():
            pass
        """,
    "test_schema_and_seed": """
        import pytest

        @pytest.mark.sandbox(template="schema", seed="app.seeds:users")
        def test_it():
            pass
        """,
    "test_data_without_seed": """
        import pytest

        @pytest.mark.sandbox(template="schema+data")
        def test_it():
            pass
        """,
    "test_lambda_seed": """
        import pytest

        @pytest.mark.sandbox(seed=lambda url: None)
        def test_it():
            pass
        """,
    "test_unknown_template": """
        import pytest

        @pytest.mark.sandbox(template="schemas")
        def test_it():
            pass
        """,
}


def test_marks_that_cannot_be_honoured_are_collection_errors(
    pytester: pytest.Pytester, make_project: MakeProject
) -> None:
    make_project(**BAD_MARKS)
    result = pytester.runpytest("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    prefix = "*.py::test_it: bad @pytest.mark.sandbox: "
    result.stdout.fnmatch_lines_random(
        [
            prefix + "template= and seed= give the test a database of its own, cloned from "
            "that template, so they imply isolation='database'; isolation='transaction' "
            "cannot go with them: remove one of the two",
            prefix + "*isolation='none' cannot go with them*",
            prefix + "template='schema' runs no seed, so seed='app.seeds:users' would be "
            "ignored: use template='schema+data', or drop seed=",
            prefix + "template='schema+data' needs seed data, and the run has none: pass "
            "seed='package.module:function' to the mark, or set the seed setting",
            prefix + "seed=<function <lambda> at *> cannot be found again by its name (a "
            "lambda, a nested function, a partial?): define it at module level, or pass "
            "'package.module:function'",
            prefix + "template='schemas' is neither a setup ('empty', 'schema', "
            "'schema+data') nor a migrate source ('alembic', *",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_validate_checks_the_template_value() -> None:
    assert validate_sandbox(template="sql:other/") == {"template": "sql:other/"}
    assert validate_sandbox(template="metadata:app.models:Base.metadata") == {
        "template": "metadata:app.models:Base.metadata"
    }
    assert validate_sandbox(template="schema+data") == {"template": "schema+data"}
    with pytest.raises(ValueError, match="neither a setup"):
        validate_sandbox(template="sql")


def _seed_here(url: str) -> None:
    """A seed function of this module, as a test module would define one."""


@pytest.mark.parametrize(
    ("template", "seed", "expected"),
    [
        pytest.param(None, None, None, id="none"),
        pytest.param("schema", None, ("sql:migrations/", "seeds:base", "schema"), id="setup"),
        pytest.param(
            "schema+data",
            "other:fill",
            ("sql:migrations/", "other:fill", "schema+data"),
            id="setup-and-seed",
        ),
        pytest.param("sql:other/", None, ("sql:other/", None, "schema"), id="source"),
        pytest.param(
            "sql:other/",
            "other:fill",
            ("sql:other/", "other:fill", "schema+data"),
            id="source-and-seed",
        ),
        pytest.param(
            None,
            _seed_here,
            ("sql:migrations/", f"{__name__}:_seed_here", "schema+data"),
            id="seed-function",
        ),
    ],
)
def test_mark_template_changes_the_runs_spec(
    tmp_path: Path,
    template: str | None,
    seed: object,
    expected: tuple[str | None, str | None, str] | None,
) -> None:
    base = TemplateSpec(migrate="sql:migrations/", seed="seeds:base", root=tmp_path)
    spec = SandboxSpec("database", "manual", template=template, seed=seed)  # type: ignore[arg-type]
    marked = mark_template(spec, base)
    if expected is None:
        assert marked is None
        return
    assert marked is not None
    assert (marked.migrate, marked.seed, marked.mode) == expected
    assert marked.root == base.root
