"""The schema the migrations built: sample data, constraints, cascades, defaults."""

from __future__ import annotations

from typing import Any

import pytest
from reminders.audit import audit_logs
from reminders.models import Base, Reminder, ReminderList, Tag, User, reminder_tags
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession


async def count(session: AsyncSession, what: Any) -> int:
    return await session.scalar(select(func.count()).select_from(what)) or 0


@pytest.mark.parametrize(
    ("table", "rows"),
    [(User, 2), (ReminderList, 2), (Reminder, 6), (Tag, 4), (reminder_tags, 6), (audit_logs, 0)],
)
async def test_sample_data_row_counts(
    async_db_session: AsyncSession, table: Any, rows: int
) -> None:
    assert await count(async_db_session, table) == rows


@pytest.mark.parametrize(
    ("reminder_id", "tags"),
    [
        (1, ["errands"]),
        (2, ["errands", "urgent"]),
        (3, ["health"]),
        (4, []),
        (5, ["meetings"]),
        (6, ["meetings"]),
    ],
)
async def test_sample_tags_by_reminder(
    async_db_session: AsyncSession, reminder_id: int, tags: list[str]
) -> None:
    names = await async_db_session.scalars(
        select(Tag.name)
        .join(reminder_tags)
        .where(reminder_tags.c.reminder_id == reminder_id)
        .order_by(Tag.name)
    )
    assert list(names) == tags


@pytest.mark.parametrize(("user_id", "lists"), [(1, ["Home"]), (2, ["Work"])])
async def test_sample_lists_by_owner(
    async_db_session: AsyncSession, user_id: int, lists: list[str]
) -> None:
    names = await async_db_session.scalars(
        select(ReminderList.name).where(ReminderList.owner_id == user_id)
    )
    assert list(names) == lists


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (User, {"email": "seq@example.com", "name": "Seq", "password_hash": "x"}),
        (ReminderList, {"owner_id": 1, "name": "Seq"}),
        (Reminder, {"list_id": 1, "title": "Seq"}),
        (Tag, {"owner_id": 1, "name": "seq"}),
    ],
)
async def test_new_rows_get_ids_after_the_sample_data(
    async_db_session: AsyncSession, model: Any, values: dict[str, Any]
) -> None:
    row = model(**values)
    async_db_session.add(row)
    await async_db_session.flush()
    assert row.id >= 101  # the seed moved every sequence past its explicit ids


async def test_server_defaults(async_db_session: AsyncSession) -> None:
    reminder = Reminder(list_id=1, title="Defaults")
    listed = ReminderList(owner_id=2, name="Defaults")
    async_db_session.add_all([reminder, listed])
    await async_db_session.commit()
    await async_db_session.refresh(reminder)
    await async_db_session.refresh(listed)
    assert (reminder.notes, reminder.priority, reminder.notify_attempts) == ("", 0, 0)
    assert (reminder.completed_at, reminder.notified_at, reminder.due_at) == (None, None, None)
    assert reminder.created_at is not None
    assert listed.color == "#3478f6"


@pytest.mark.parametrize(
    "row",
    [
        lambda: User(email="alice@example.com", name="Dup", password_hash="x"),
        lambda: ReminderList(owner_id=1, name="Home"),
        lambda: Tag(owner_id=2, name="meetings"),
        lambda: Reminder(list_id=999, title="No list"),
        lambda: Reminder(list_id=1, title="Too urgent", priority=4),
        lambda: Tag(owner_id=999, name="orphan"),
    ],
    ids=[
        "duplicate-email",
        "duplicate-list",
        "duplicate-tag",
        "missing-list",
        "priority-check",
        "missing-owner",
    ],
)
async def test_constraints_hold(async_db_session: AsyncSession, row: Any) -> None:
    async_db_session.add(row())
    with pytest.raises(IntegrityError):
        await async_db_session.commit()
    await async_db_session.rollback()
    # The failed statement did not poison the test's transaction.
    assert await count(async_db_session, User) == 2


async def test_deleting_a_list_cascades_to_reminders_and_links(
    async_db_session: AsyncSession,
) -> None:
    await async_db_session.execute(text("DELETE FROM reminder_lists WHERE id = 1"))
    await async_db_session.commit()
    assert await count(async_db_session, Reminder) == 2
    assert await count(async_db_session, reminder_tags) == 2


async def test_deleting_a_user_cascades_everywhere(async_db_session: AsyncSession) -> None:
    await async_db_session.execute(
        insert(audit_logs).values(actor_id=2, action="user.updated", entity="user", entity_id=2)
    )
    await async_db_session.execute(text("DELETE FROM users WHERE id = 2"))
    await async_db_session.commit()
    assert [await count(async_db_session, t) for t in (ReminderList, Reminder, Tag)] == [1, 4, 3]
    # The audit trail outlives its actor.
    actor = await async_db_session.scalar(select(audit_logs.c.actor_id))
    assert actor is None


async def test_deleting_a_tag_keeps_its_reminders(async_db_session: AsyncSession) -> None:
    tag = await async_db_session.get(Tag, 4)
    await async_db_session.delete(tag)
    await async_db_session.commit()
    assert await count(async_db_session, Reminder) == 6
    assert await count(async_db_session, reminder_tags) == 4


async def test_relationships_load(async_db_session: AsyncSession) -> None:
    from sqlalchemy.orm import selectinload

    alice = await async_db_session.scalar(
        select(User)
        .where(User.id == 1)
        .options(
            selectinload(User.lists)
            .selectinload(ReminderList.reminders)
            .selectinload(Reminder.tags)
        )
    )
    assert alice is not None
    (home,) = alice.lists
    assert [r.title for r in home.reminders] == [
        "Buy milk",
        "Pay rent!",
        "Book dentist",
        "Water the plants",
    ]
    assert [t.name for t in home.reminders[1].tags] == ["errands", "urgent"]


def test_audit_logs_exists_only_in_the_migrations() -> None:
    # The models do not declare it: create_all alone would leave the app without its audit trail.
    assert "audit_logs" not in Base.metadata.tables
    assert set(Base.metadata.tables) == {
        "users",
        "reminder_lists",
        "reminders",
        "tags",
        "reminder_tags",
    }


async def test_audit_logs_table_has_its_migration_columns(async_db_session: AsyncSession) -> None:
    columns = await async_db_session.scalars(
        text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'audit_logs' ORDER BY ordinal_position"
        )
    )
    assert list(columns) == [
        "id",
        "actor_id",
        "action",
        "entity",
        "entity_id",
        "details",
        "created_at",
    ]


async def test_the_database_is_at_the_last_migration(async_db_session: AsyncSession) -> None:
    assert await async_db_session.scalar(text("SELECT version_num FROM alembic_version")) == "0006"


async def test_audit_details_are_jsonb(async_db_session: AsyncSession) -> None:
    await async_db_session.execute(
        insert(audit_logs).values(
            action="x", entity="reminder", entity_id=1, details={"tags": ["a", "b"], "n": 2}
        )
    )
    found = await async_db_session.scalar(
        select(audit_logs.c.entity_id).where(audit_logs.c.details["tags"].contains(["b"]))
    )
    assert found == 1


async def test_partial_index_for_due_reminders_exists(async_db_session: AsyncSession) -> None:
    definition = await async_db_session.scalar(
        text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_reminders_due_open'")
    )
    assert definition is not None
    assert "WHERE (completed_at IS NULL)" in definition


@pytest.mark.parametrize(
    ("title", "priority"), [("Pay rent!", 3), ("Buy milk", 1), ("Water the plants", 0)]
)
async def test_sample_priorities(async_db_session: AsyncSession, title: str, priority: int) -> None:
    assert (
        await async_db_session.scalar(select(Reminder.priority).where(Reminder.title == title))
        == priority
    )
