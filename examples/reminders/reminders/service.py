"""What the routes share: ownership checks, tags, completion."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from fastapi import HTTPException, status
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from .models import Reminder, ReminderList, Tag
from .schemas import ReminderOut


def not_found(what: str) -> HTTPException:
    """Return the 404 for something missing or owned by someone else."""
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{what} not found")


async def owned_list(session: AsyncSession, owner_id: int, list_id: int) -> ReminderList:
    """Return the list if *owner_id* owns it, else answer 404 (never 403: ids stay private)."""
    found = await session.scalar(
        select(ReminderList).where(ReminderList.id == list_id, ReminderList.owner_id == owner_id)
    )
    if found is None:
        raise not_found("List")
    return found


async def owned_reminder(session: AsyncSession, owner_id: int, reminder_id: int) -> Reminder:
    """Return the reminder (with its tags) if *owner_id* owns it, else answer 404."""
    found = await session.scalar(
        select(Reminder)
        .join(Reminder.reminder_list)
        .where(Reminder.id == reminder_id, ReminderList.owner_id == owner_id)
        .options(selectinload(Reminder.tags))
        .execution_options(populate_existing=True)
    )
    if found is None:
        raise not_found("Reminder")
    return found


async def ensure_tags(session: AsyncSession, owner_id: int, names: Iterable[str]) -> list[Tag]:
    """Return the owner's tags with these names, creating the missing ones.

    ``ON CONFLICT DO NOTHING`` keeps concurrent requests that add the same new
    tag from failing on the unique index.
    """
    wanted = sorted(set(names))
    if not wanted:
        return []
    await session.execute(
        insert(Tag)
        .values([{"owner_id": owner_id, "name": name} for name in wanted])
        .on_conflict_do_nothing(constraint="uq_tags_owner_name")
    )
    tags = await session.scalars(
        select(Tag).where(Tag.owner_id == owner_id, Tag.name.in_(wanted)).order_by(Tag.name)
    )
    return list(tags)


async def set_completed(session: AsyncSession, reminder_id: int, done: bool) -> bool:
    """Complete (or reopen) a reminder; return False when it already was.

    A conditional UPDATE, so that of concurrent requests exactly one changes
    the row and publishes the event.
    """
    now = datetime.now(UTC)
    if done:
        stmt = (
            update(Reminder)
            .where(Reminder.id == reminder_id, Reminder.completed_at.is_(None))
            .values(completed_at=now, updated_at=now)
        )
    else:
        stmt = (
            update(Reminder)
            .where(Reminder.id == reminder_id, Reminder.completed_at.is_not(None))
            .values(completed_at=None, updated_at=now)
        )
    changed = await session.execute(stmt.returning(Reminder.id))
    return changed.first() is not None


def reminder_out(reminder: Reminder) -> ReminderOut:
    """Return the response body of a reminder loaded with its tags."""
    return ReminderOut(
        id=reminder.id,
        list_id=reminder.list_id,
        title=reminder.title,
        notes=reminder.notes,
        due_at=reminder.due_at,
        priority=reminder.priority,
        completed=reminder.completed_at is not None,
        completed_at=reminder.completed_at,
        notified_at=reminder.notified_at,
        tags=sorted(tag.name for tag in reminder.tags),
    )
