"""Baseline ``truncate_per_test``: TRUNCATE every table after every test, then reseed.

One database per process, built with the app's migrations and sample data;
after each test every table is emptied in one ``TRUNCATE ... RESTART IDENTITY
CASCADE`` and the sample data is inserted again, so ids start over too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, text

from ._common import (
    Databases,
    import_app_paths,
    is_xdist_controller,
    isolation_of,
    point_env,
    register_markers,
    sync_engine,
)
from ._fixtures import *  # noqa: F403 - the plugin-shaped fixtures
from ._fixtures import STATE

TABLES = "audit_logs, reminder_tags, tags, reminders, reminder_lists, users"


def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    import_app_paths()
    if is_xdist_controller(early_config):
        return
    dbs = Databases("truncate")
    # Before anything imports the app (the seed does): its settings are read once.
    point_env(dbs.url(dbs.name("db")))
    template = dbs.template()
    worker = dbs.create("db", template=template)
    STATE.update(dbs=dbs, template=template, worker=worker)


def pytest_configure(config: pytest.Config) -> None:
    register_markers(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "dbs" in STATE:
        STATE.pop("dbs").close()


@pytest.fixture(scope="session")
def _admin_connection() -> Iterator[Connection]:
    engine = sync_engine(STATE["dbs"].url(STATE["worker"]))
    with engine.connect() as conn:
        yield conn
    engine.dispose()


@pytest.fixture
def _baseline_isolation(
    request: pytest.FixtureRequest, _database_isolation: str, _admin_connection: Connection
) -> Iterator[str]:
    yield _database_isolation
    if isolation_of(request.node) == "database":
        return
    from reminders.seed import insert_sample_data

    with _admin_connection.begin():
        _admin_connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        insert_sample_data(_admin_connection)
