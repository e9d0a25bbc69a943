"""Baseline ``create_all_per_test``: build the schema before every test, drop it after.

What many FastAPI suites do: ``Base.metadata.create_all`` in a fixture, the
sample data inserted, ``drop_all`` at teardown. ``audit_logs`` exists only
through a migration, so, like the teams that hit that, this baseline keeps a
hand-written copy of that table next to the models' metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine

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


def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    import_app_paths()
    if is_xdist_controller(early_config):
        return
    dbs = Databases("create_all")
    point_env(dbs.url(dbs.name("db")))
    template = dbs.template()  # only for tests marked isolation="database"
    worker = dbs.create("db")  # empty: every test creates the schema itself
    STATE.update(dbs=dbs, template=template, worker=worker)


def pytest_configure(config: pytest.Config) -> None:
    register_markers(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "dbs" in STATE:
        STATE.pop("dbs").close()


def full_metadata() -> MetaData:
    """Return the models' tables plus the hand-kept copy of the migration-only table."""
    from reminders.models import Base

    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    Table(
        "audit_logs",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("actor_id", Integer, ForeignKey("users.id", ondelete="SET NULL")),
        Column("action", String(64), nullable=False),
        Column("entity", String(32), nullable=False),
        Column("entity_id", Integer),
        Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    return metadata


@pytest.fixture(scope="session")
def _schema() -> Iterator[tuple[MetaData, Engine]]:
    engine = sync_engine(STATE["dbs"].url(STATE["worker"]))
    yield full_metadata(), engine
    engine.dispose()


@pytest.fixture
def _baseline_isolation(
    request: pytest.FixtureRequest,
    _database_isolation: str,
    _schema: tuple[MetaData, Engine],
) -> Iterator[str]:
    if isolation_of(request.node) == "database":
        yield _database_isolation
        return
    from reminders.seed import insert_sample_data

    metadata, engine = _schema
    with engine.begin() as conn:
        metadata.create_all(conn)
        insert_sample_data(conn)
    yield _database_isolation
    with engine.begin() as conn:
        metadata.drop_all(conn)
