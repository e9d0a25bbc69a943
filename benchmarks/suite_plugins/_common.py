"""What the baseline plugins share: the server, the app's schema, and the plugin-shaped fixtures."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from sqlsandbox.pytest_plugin import Unique
from sqlsandbox.servers import Server, connect_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reminders"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """Return the admin URL of the server the baselines use (the benchmark's server)."""
    return os.environ.get("SQLSANDBOX_URL") or DEFAULT_SERVER


def worker_id() -> str:
    """Return ``gw0``... under pytest-xdist, ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def is_xdist_controller(config: pytest.Config) -> bool:
    """Return whether this process only distributes tests to xdist workers."""
    return "PYTEST_XDIST_WORKER" not in os.environ and bool(
        getattr(config.option, "numprocesses", None)
    )


def import_app_paths() -> None:
    """Make the example's packages importable before pytest applies its ``pythonpath``."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))


def migrate(url: str) -> None:
    """Run the app's Alembic migrations into the database at *url*."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(EXAMPLE / "alembic.ini"))
    cfg.set_main_option("script_location", str(EXAMPLE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")


def seed(url: str) -> None:
    """Load the app's sample data into the database at *url*."""
    from reminders.seed import load

    load(url)


class Databases:
    """The databases one test process creates, all dropped at the end."""

    def __init__(self, label: str) -> None:
        self.server: Server = connect_server(server_url())
        self.prefix = f"sqlsandbox_bench_{label}_{uuid.uuid4().hex[:8]}_{worker_id()}"
        self.created: list[str] = []
        self._count = 0

    def url(self, name: str, scheme: str = "postgresql+psycopg") -> str:
        """Return the URL of database *name* with *scheme*."""
        return self.server.database_url(name, scheme=scheme).render()

    def name(self, suffix: str) -> str:
        """Return the name of our database with *suffix*."""
        return f"{self.prefix}_{suffix}"

    def create(self, suffix: str, *, template: str | None = None) -> str:
        """Create (or clone from *template*) a database and return its name."""
        name = self.name(suffix)
        if template is None:
            self.server.create_database(name)
        else:
            self.server.clone_database(name, template)
        self.created.append(name)
        return name

    def template(self) -> str:
        """Create a database with the app's migrations and sample data."""
        name = self.create("tmpl")
        url = self.url(name)
        migrate(url)
        seed(url)
        return name

    def fresh_clone(self, template: str) -> str:
        """Return a new clone of *template* (for tests marked isolation="database")."""
        self._count += 1
        return self.create(f"t{self._count}", template=template)

    def drop(self, name: str) -> None:
        """Drop one of our databases now."""
        self.server.terminate_connections(name)
        self.server.drop_database(name)
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        """Drop every database we made."""
        for name in list(self.created):
            try:
                self.drop(name)
            except Exception as exc:  # a teardown failure must not hide the run's result
                print(f"baseline: could not drop {name}: {exc}", file=sys.stderr)
        self.server.close()


def point_env(url_psycopg: str) -> None:
    """Point the app's env vars at a database (before the app is imported)."""
    os.environ["DATABASE_URL"] = url_psycopg.replace(
        "postgresql+psycopg://", "postgresql+asyncpg://"
    )
    os.environ["SYNC_DATABASE_URL"] = url_psycopg


def sync_engine(url: str) -> Engine:
    """Return a NullPool psycopg engine for admin work on *url*."""
    return create_engine(url, poolclass=NullPool)


def isolation_of(item: pytest.Item) -> str:
    """Return the isolation the test's ``sandbox`` mark asks for ("transaction" by default)."""
    for mark in item.iter_markers("sandbox"):
        if "isolation" in mark.kwargs:
            return str(mark.kwargs["isolation"])
    return "transaction"


def register_markers(config: pytest.Config) -> None:
    """Register the markers the suite uses, which the sqlsandbox plugin would have registered."""
    config.addinivalue_line("markers", "sandbox(isolation, mode, template, seed): sqlsandbox mark")


@pytest.fixture(scope="session")
def unique() -> Unique:
    """Values unique across tests and workers (the same helper sqlsandbox offers)."""
    index = int(worker_id()[2:]) if worker_id().startswith("gw") else 0
    return Unique(
        uuid.uuid4().hex[:6], index, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    )


def app_engines() -> tuple[Any, Any]:
    """Return the app's (async, sync) engines, built at its import from the env vars."""
    from reminders import db

    return db.async_engine, db.sync_engine
