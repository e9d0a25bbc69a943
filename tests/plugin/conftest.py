"""Helpers for the plugin's end-to-end tests: a small project that pytester runs."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sqlsandbox._settings import ENV_PREFIX, KEYS
from sqlsandbox._urls import DatabaseURL

_SETTING_ENVS = {key.env for key in KEYS}

# The inner runs get their own ini: these keep their output free of warnings
# that have nothing to do with sqlsandbox.
_PYTEST_INI = """
[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the outer run's xdist identity and sqlsandbox settings out of inner runs."""
    for name in list(os.environ):
        if name.startswith("PYTEST_XDIST_") or (
            name.startswith(ENV_PREFIX) and name in _SETTING_ENVS
        ):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def inner_registry(postgres_admin_url: DatabaseURL) -> Iterator[str]:
    """A registry of this test process for inner runs on the test PostgreSQL.

    Inner runs reuse each other's templates through it; when the session
    ends every database it lists is dropped, and the registry with them, so
    no `ready` template is left in the shared default registry.
    """
    from sqlsandbox.provision import Registry, parse_name
    from sqlsandbox.servers import connect_server

    name = f"sqlsandbox_reg_{uuid.uuid4().hex[:12]}"
    yield name
    server = connect_server(postgres_admin_url)
    try:
        if server.database_exists(name):
            registry = Registry(server, name).open()
            try:
                for row in registry.databases():
                    if parse_name(row.name) is not None:
                        server.drop_database(row.name, missing_ok=True)
            finally:
                registry.close()
            server.drop_database(name, missing_ok=True)
    finally:
        server.close()


MakeProject = Callable[..., None]


@pytest.fixture
def make_project(pytester: pytest.Pytester) -> MakeProject:
    """Write pyproject.toml (with an optional [tool.sqlsandbox] body) and test files."""

    def make(sqlsandbox: str = "", **files: str) -> None:
        body = textwrap.dedent(_PYTEST_INI)
        if sqlsandbox:
            body += "\n[tool.sqlsandbox]\n" + textwrap.dedent(sqlsandbox)
        pytester.makefile(".toml", pyproject=body)
        for name, source in files.items():
            pytester.makepyfile(**{name: textwrap.dedent(source)})

    return make


def registered_elsewhere(server: Any, registry_name: str) -> set[str]:
    """Return the databases that registries other than *registry_name* on *server* list.

    Other test processes run inner runs on the same server at the same time,
    each with a registry of its own, and may build templates of the same
    fingerprint: their databases are theirs, not leftovers of this run.
    """
    names: set[str] = set()
    for name in server.list_databases(prefix="sqlsandbox_reg"):
        if name == registry_name:
            continue
        try:  # read only: a Registry would create a registry dropped meanwhile again
            rows = server.execute("SELECT name FROM sqlsandbox_databases", database=name)
        except Exception:  # dropped meanwhile by its test's teardown, or not ours
            continue
        names |= {row[0] for row in rows}
    return names
