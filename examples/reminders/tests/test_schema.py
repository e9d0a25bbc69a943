"""Tests that change the schema, migrate, or use several drivers or processes.

Each gets a database of its own (a clone of the template, from the warm
pool): DDL, Alembic runs and other processes cannot be rolled back by a
test transaction, and two drivers cannot share one.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from helpers import ALICE, FIRST_NEW_ID, HOME, bearer
from httpx import AsyncClient
from reminders.events import bus
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

pytestmark = pytest.mark.sandbox(isolation="database")

APP_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def alembic_config(db_url: str) -> Config:
    cfg = Config(str(APP_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(APP_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", db_url)
    cfg.attributes["configure_logger"] = False
    return cfg


@pytest.fixture
def admin(db_url: str) -> Iterator[Connection]:
    """A plain autocommit connection of the test's own to its database."""
    engine = create_engine(
        make_url(db_url).set(drivername="postgresql+psycopg"), poolclass=NullPool
    )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn
    engine.dispose()


def test_migrations_go_down_and_up_again(alembic_config: Config, admin: Connection) -> None:
    command.downgrade(alembic_config, "base")
    tables = admin.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    assert sorted(tables) == ["alembic_version"]
    command.upgrade(alembic_config, "head")
    assert admin.scalar(text("SELECT version_num FROM alembic_version")) == "0006"
    assert admin.scalar(text("SELECT count(*) FROM users")) == 0  # the seed is not a migration


@pytest.mark.parametrize(
    ("title", "priority"),
    [("Call mum!", 3), ("Call mum", 0), ("Wow! really", 0), ("Trailing space!  ", 3), ("!", 3)],
)
def test_the_data_migration_backfills_priorities(
    alembic_config: Config, admin: Connection, title: str, priority: int
) -> None:
    command.downgrade(alembic_config, "0004")
    assert (
        "priority"
        not in admin.scalars(
            text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'reminders'"
            )
        ).all()
    )
    admin.execute(
        text("INSERT INTO reminders (id, list_id, title) VALUES (500, 1, :t)"), {"t": title}
    )
    command.upgrade(alembic_config, "0005")
    assert admin.scalar(text("SELECT priority FROM reminders WHERE id = 500")) == priority


def test_downgrading_the_data_migration_keeps_the_rows(
    alembic_config: Config, admin: Connection
) -> None:
    command.downgrade(alembic_config, "0004")
    assert admin.scalar(text("SELECT count(*) FROM reminders")) == 6
    assert admin.scalar(text("SELECT title FROM reminders WHERE id = 2")) == "Pay rent!"


def test_alembic_sees_no_difference_between_models_and_migrations(alembic_config: Config) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from reminders.models import Base

    engine = create_engine(
        make_url(alembic_config.get_main_option("sqlalchemy.url") or "").set(
            drivername="postgresql+psycopg"
        ),
        poolclass=NullPool,
    )
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    # Only what the migrations add on purpose: audit_logs and indexes the models do not name.
    kinds = sorted({(entry[0] if isinstance(entry, tuple) else entry[0][0]) for entry in diff})
    tables = {
        entry[1].name for entry in diff if isinstance(entry, tuple) and entry[0] == "remove_table"
    }
    assert tables == {"audit_logs"}
    assert set(kinds) <= {"remove_table", "remove_index"}


async def test_a_new_column_does_not_break_the_app(
    admin: Connection, client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    admin.execute(text("ALTER TABLE reminders ADD COLUMN location text"))
    admin.execute(text("UPDATE reminders SET location = 'kitchen' WHERE id = 4"))
    created = await client.post(
        "/reminders", headers=alice_headers, json={"list_id": HOME, "title": "x"}
    )
    assert created.status_code == 201
    assert (await client.get("/reminders/4", headers=alice_headers)).json()[
        "title"
    ] == "Water the plants"


async def test_without_the_audit_table_writes_still_succeed(
    admin: Connection, client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    admin.execute(text("DROP TABLE audit_logs"))
    failures_before = len(bus.failures)
    response = await client.post("/lists", headers=alice_headers, json={"name": "Still works"})
    assert response.status_code == 201
    await bus.drain()
    (event, error) = bus.failures[failures_before]
    assert event.name == "list.created"
    assert "audit_logs" in str(error)
    del bus.failures[failures_before:]


async def test_truncate_empties_only_this_tests_database(
    admin: Connection, client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    admin.execute(text("TRUNCATE reminders CASCADE"))
    assert (await client.get("/reminders", headers=alice_headers)).json()["total"] == 0


def test_sample_data_is_there_after_a_truncate_elsewhere(admin: Connection) -> None:
    # Whatever ran before, in this process or another, this database is a fresh clone.
    assert admin.scalar(text("SELECT count(*) FROM reminders")) == 6


def test_create_index_concurrently(admin: Connection) -> None:
    # Cannot run inside a transaction block: only a database of the test's own allows it.
    admin.execute(text("CREATE INDEX CONCURRENTLY ix_reminders_title ON reminders (lower(title))"))
    assert (
        admin.scalar(text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_reminders_title'"))
        == 1
    )


def test_vacuum_analyze(admin: Connection) -> None:
    admin.execute(text("VACUUM ANALYZE reminders"))
    assert admin.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'reminders'")) == 6


async def test_first_new_ids_in_a_fresh_database(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    listed = await client.post("/lists", headers=alice_headers, json={"name": "Fresh"})
    created = await client.post(
        "/reminders", headers=alice_headers, json={"list_id": HOME, "title": "Fresh"}
    )
    tagged = await client.post("/tags", headers=alice_headers, json={"name": "fresh"})
    assert [r.json()["id"] for r in (listed, created, tagged)] == [FIRST_NEW_ID] * 3


async def test_the_sync_report_sees_what_the_async_api_wrote(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    # Two drivers (asyncpg for the API, psycopg for the report): two real transactions.
    for title in ("one", "two"):
        await client.post(
            "/reminders",
            headers=alice_headers,
            json={"list_id": HOME, "title": title, "priority": 3},
        )
    await client.post("/reminders/1/complete", headers=alice_headers)
    report = (await client.get("/reports/summary", headers=alice_headers)).json()
    assert (report["total"], report["open"], report["completed"], report["high_priority_open"]) == (
        6,
        4,
        2,
        3,
    )


@pytest.mark.parametrize("user_id", [1, 2])
async def test_report_endpoint(client: AsyncClient, user_id: int) -> None:
    report = (await client.get("/reports/summary", headers=bearer(user_id))).json()
    assert report["user_id"] == user_id
    assert report["total"] == (4 if user_id == ALICE else 2)


async def test_the_cli_in_another_process_sees_the_apis_writes(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    await client.post(
        "/reminders", headers=alice_headers, json={"list_id": HOME, "title": "From the API"}
    )
    # SYNC_DATABASE_URL points at this test's database; the child process inherits it.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reminders.reports",
        "--user",
        "alice@example.com",
        "--format",
        "text",
        cwd=APP_ROOT,
        env={**os.environ, "PYTHONPATH": str(APP_ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith("alice@example.com: 4 open, 1 done")


async def test_reminders_written_by_sql_are_served(admin: Connection, client: AsyncClient) -> None:
    admin.execute(
        text("INSERT INTO reminders (list_id, title, priority) VALUES (1, 'From SQL', 2)")
    )
    page = (await client.get("/reminders", headers=bearer(ALICE), params={"q": "from sql"})).json()
    assert [item["priority"] for item in page["items"]] == [2]
