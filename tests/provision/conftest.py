"""Fixtures of the provisioning tests: a real server per backend, a private registry.

Every test process gets its own registry database (``sqlsandbox_reg_<uuid>``)
and every test its own lock directory, so tests running in parallel never see
each other's owners, templates or locks; after each test every database the
registry lists is dropped, and the registry itself when the session ends.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlsandbox.provision import Provisioner, Registry, parse_name
from sqlsandbox.provision._dbapi import connect
from sqlsandbox.servers import Server, connect_server

BACKENDS = [
    pytest.param("postgresql", id="postgresql"),
    pytest.param("mariadb", id="mariadb"),
    pytest.param("sqlite", id="sqlite"),
]

#: Column types per backend for the small schemas the tests migrate.
SERIAL = {
    "postgresql": "SERIAL PRIMARY KEY",
    "mariadb": "INT AUTO_INCREMENT PRIMARY KEY",
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
}


def server_for(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Server:
    """Return a server of *backend*, skipping (with the reason) if it is not available."""
    if backend == "postgresql":
        return connect_server(request.getfixturevalue("postgres_admin_url"))
    if backend == "mariadb":
        return connect_server(request.getfixturevalue("mariadb_admin_url"))
    return connect_server(f"sqlite:///{tmp_path / 'sqlite'}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn."""
    return str(request.param)


@pytest.fixture
def server(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Server]:
    """A real server of the backend under test."""
    srv = server_for(request, backend, tmp_path)
    yield srv
    srv.close()


@pytest.fixture
def pg_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """The real PostgreSQL, for tests of PostgreSQL-only behaviour."""
    srv = server_for(request, "postgresql", tmp_path)
    yield srv
    srv.close()


def empty_registry(server: Server, name: str) -> None:
    """Drop every database registry *name* lists and forget every owner in it."""
    if not server.database_exists(name):
        return
    registry = Registry(server, name).open()
    try:
        for row in registry.databases():
            if parse_name(row.name) is not None:
                server.drop_database(row.name, missing_ok=True)
            registry.remove_database(row.name)
        for owner in registry.owners():
            registry.remove_owner(owner.owner_id)
    finally:
        registry.close()


@pytest.fixture(scope="session")
def _registries() -> Iterator[dict[str, tuple[str, Any]]]:
    """One registry per backend and test process, dropped when the session ends."""
    made: dict[str, tuple[str, Any]] = {}
    yield made
    for name, url in made.values():
        srv = connect_server(url)
        try:
            empty_registry(srv, name)
            srv.drop_database(name, missing_ok=True)
        finally:
            srv.close()


@pytest.fixture
def registry_name(
    server: Server, backend: str, _registries: dict[str, tuple[str, Any]]
) -> Iterator[str]:
    """A registry no other test process uses; emptied after each test.

    Tests of one process run one after the other, so an emptied registry is
    as good as a new one (and saves a CREATE and a DROP DATABASE per test).
    SQLite servers live in the test's tmp_path, so theirs is new anyway.
    """
    if backend == "sqlite":
        name = f"sqlsandbox_reg_{uuid.uuid4().hex[:12]}"
    else:
        name = _registries.setdefault(
            backend, (f"sqlsandbox_reg_{uuid.uuid4().hex[:12]}", server.url)
        )[0]
    yield name
    empty_registry(server, name)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """Where this test's lock files go."""
    return tmp_path / "cache"


@pytest.fixture
def make_provisioner(
    server: Server, registry_name: str, cache_dir: Path
) -> Iterator[Callable[..., Provisioner]]:
    """Return a factory of provisioners on the test's server and registry; all closed after."""
    made: list[Provisioner] = []

    def make(**kwargs: Any) -> Provisioner:
        kwargs.setdefault("registry_database", registry_name)
        kwargs.setdefault("cache_dir", cache_dir)
        # No spare clones unless a test asks: they would only cost creates and drops.
        kwargs.setdefault("warm", {})
        # Measuring clone strategies costs six clones per cache directory (one per test
        # here): tests of it ask for it (test_strategy.py).
        kwargs.setdefault("choose_strategy", False)
        provisioner = Provisioner(server, **kwargs)
        made.append(provisioner)
        return provisioner

    yield make
    for provisioner in made:
        provisioner.close()


def query(url: Any, sql: str) -> list[tuple[Any, ...]]:
    """Run *sql* in the database at *url* and return its rows."""
    conn = connect(url)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
        cur.close()
        if url.backend == "sqlite":
            conn.commit()
        return rows
    finally:
        conn.close()


def write_sql_project(root: Path, backend: str, *, extra: str = "") -> Path:
    """Write two SQL migrations (users with explicit ids, then orders) under *root*/sql."""
    folder = root / "sql"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "001_users.sql").write_text(
        f"CREATE TABLE users (id {SERIAL[backend]}, name VARCHAR(50) NOT NULL);\n"
        "INSERT INTO users (id, name) VALUES (1, 'ada'), (7, 'grace');\n"
    )
    (folder / "002_orders.sql").write_text(
        f"CREATE TABLE orders (id {SERIAL[backend]}, user_id INT NOT NULL "
        f"REFERENCES users (id));\n{extra}"
    )
    return folder


@contextlib.contextmanager
def on_path(root: Path) -> Iterator[None]:
    """Let modules written under *root* be imported, and forget them afterwards."""
    import sys

    sys.path.insert(0, str(root))
    before = set(sys.modules)
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            if module is not None and str(getattr(module, "__file__", "") or "").startswith(
                str(root)
            ):
                del sys.modules[name]
