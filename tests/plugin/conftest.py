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
    name = f"sqlsandbox_reg_{uuid.uuid4().hex[:12]}"
    yield name
    drop_registry(postgres_admin_url, name)


def drop_registry(url: DatabaseURL, name: str) -> None:
    """Drop every database the registry *name* on *url* lists, then the registry itself.

    The default registry (shared by every run on the server) is emptied, never dropped.
    """
    from sqlsandbox.provision import REGISTRY_DATABASE, Registry, parse_name
    from sqlsandbox.servers import connect_server

    server = connect_server(url)
    try:
        if not server.database_exists(name):
            return
        registry = Registry(server, name).open()
        try:
            for row in registry.databases():
                if parse_name(row.name) is not None:
                    server.drop_database(row.name, missing_ok=True)
        finally:
            registry.close()
        if name != REGISTRY_DATABASE:
            server.drop_database(name, missing_ok=True)
    finally:
        server.close()


@pytest.fixture
def server_env(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    postgres_admin_url: DatabaseURL,
    inner_registry: str,
) -> DatabaseURL:
    """Point inner runs at the test PostgreSQL, with this process's registry.

    The test module's ``APP_ENV`` (env var -> value) gives the app its own
    settings, with a password that must never show up in the output and a host
    that does not exist: the plugin must point them at the worker's clone.
    """
    monkeypatch.setenv("SQLSANDBOX_URL", postgres_admin_url.render())
    monkeypatch.setenv("SQLSANDBOX_REGISTRY_DATABASE", inner_registry)
    for name, value in getattr(request.module, "APP_ENV", {}).items():
        monkeypatch.setenv(name, value)
    return postgres_admin_url


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
