"""Listing tests (``--collect-only``) makes no database: no template, no clone, no registry.

tests/plugin/test_plugin_provisioning.py checks an existing registry gains no
row with ``url_env``; this covers the other configurations, xdist, and marks
that name templates of their own, with a registry that does not exist yet:
if anything were provisioned, the registry would be created to record it.
"""

from __future__ import annotations

import uuid

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

TESTS = """
import pytest


def test_plain(db_url):
    pass


@pytest.mark.sandbox(isolation="database")
def test_own_database(db_url):
    pass


@pytest.mark.sandbox(template="sql:other/", seed="seeds:fill")
def test_own_template(db_url):
    pass
"""

SEEDS = """
import pathlib

pathlib.Path(__file__).with_name("seed-imported.txt").write_text("imported")


def fill(url):
    pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
@pytest.mark.parametrize(
    "config",
    [
        pytest.param('migrate = "sql:migrations/"\n', id="migrate"),
        pytest.param('migrate = "sql:migrations/"\nurl_env = ["DATABASE_URL"]\n', id="url-env"),
        pytest.param('migrate = "sql:migrations/"\nisolation = "database"\n', id="database"),
    ],
)
def test_collect_only_provisions_nothing(
    pytester: pytest.Pytester,
    make_project: MakeProject,
    monkeypatch: pytest.MonkeyPatch,
    postgres_admin_url: DatabaseURL,
    config: str,
    workers: list[str],
) -> None:
    from sqlsandbox.provision import Registry, parse_name
    from sqlsandbox.servers import connect_server

    registry = f"sqlsandbox_reg_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SQLSANDBOX_URL", postgres_admin_url.render())
    monkeypatch.setenv("SQLSANDBOX_REGISTRY_DATABASE", registry)
    make_project(config, seeds=SEEDS, test_x=TESTS)
    pytester.mkdir("migrations").joinpath("001.sql").write_text("CREATE TABLE a (id int);\n")
    pytester.mkdir("other").joinpath("001.sql").write_text("CREATE TABLE b (id int);\n")

    result = pytester.runpytest_subprocess("-p", "no:randomly", "--collect-only", *workers)

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*3 tests collected*"])
    assert "template" not in result.stderr.str()
    # Not even a seed module was imported to fingerprint the mark's template.
    assert not (pytester.path / "seed-imported.txt").exists()
    server = connect_server(postgres_admin_url)
    try:
        created = server.database_exists(registry)
        if created:  # leave nothing behind, then fail
            opened = Registry(server, registry).open()
            for row in opened.databases():
                if parse_name(row.name) is not None:
                    server.drop_database(row.name, missing_ok=True)
            opened.close()
            server.drop_database(registry, missing_ok=True)
    finally:
        server.close()
    assert not created, "--collect-only created sqlsandbox's registry: it provisioned something"
