"""Reminders: CRUD, search, filters, pagination, tags, notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import selectinload

from ..deps import BusDep, CurrentUser, PoolDep, SessionDep
from ..events import Event
from ..models import Reminder, ReminderList, Tag
from ..schemas import Page, ReminderIn, ReminderOut, ReminderUpdate, TagName
from ..service import (
    ensure_tags,
    not_found,
    owned_list,
    owned_reminder,
    reminder_out,
    set_completed,
)

router = APIRouter(prefix="/reminders", tags=["reminders"])

Sort = Literal["id", "-id", "due_at", "-due_at", "priority", "-priority", "title", "-title"]

_SORT_COLUMNS = {
    "id": Reminder.id,
    "due_at": Reminder.due_at,
    "priority": Reminder.priority,
    "title": Reminder.title,
}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@router.get("", response_model=Page[ReminderOut])
async def search(
    user: CurrentUser,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    list_id: int | None = None,
    completed: bool | None = None,
    tag: str | None = None,
    priority: Annotated[int | None, Query(ge=0, le=3)] = None,
    min_priority: Annotated[int | None, Query(ge=0, le=3)] = None,
    due_before: datetime | None = None,
    due_after: datetime | None = None,
    overdue: bool = False,
    sort: Sort = "id",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[ReminderOut]:
    """Return the user's reminders matching every filter given, a page at a time."""
    where: list[ColumnElement[bool]] = [ReminderList.owner_id == user.id]
    if q:
        pattern = f"%{_escape_like(q.strip())}%"
        where.append(or_(Reminder.title.ilike(pattern), Reminder.notes.ilike(pattern)))
    if list_id is not None:
        where.append(Reminder.list_id == list_id)
    if completed is not None:
        where.append(
            Reminder.completed_at.is_not(None) if completed else Reminder.completed_at.is_(None)
        )
    if tag is not None:
        where.append(Reminder.tags.any(Tag.name == tag.strip().lower()))
    if priority is not None:
        where.append(Reminder.priority == priority)
    if min_priority is not None:
        where.append(Reminder.priority >= min_priority)
    if due_before is not None:
        where.append(Reminder.due_at < due_before)
    if due_after is not None:
        where.append(Reminder.due_at >= due_after)
    if overdue:
        where.append(Reminder.due_at < datetime.now(UTC))
        where.append(Reminder.completed_at.is_(None))
    base = select(Reminder).join(Reminder.reminder_list).where(*where)
    total = await session.scalar(select(func.count()).select_from(base.subquery())) or 0
    column = _SORT_COLUMNS[sort.lstrip("-")]
    order = column.desc().nulls_last() if sort.startswith("-") else column.asc().nulls_last()
    rows = await session.scalars(
        base.options(selectinload(Reminder.tags))
        .order_by(order, Reminder.id)
        .limit(limit)
        .offset(offset)
    )
    return Page[ReminderOut](
        items=[reminder_out(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ReminderOut)
async def create(
    body: ReminderIn, user: CurrentUser, session: SessionDep, bus: BusDep
) -> ReminderOut:
    """Create a reminder in one of the user's lists."""
    await owned_list(session, user.id, body.list_id)
    reminder = Reminder(
        list_id=body.list_id,
        title=body.title,
        notes=body.notes,
        due_at=body.due_at,
        priority=body.priority,
    )
    reminder.tags = await ensure_tags(session, user.id, body.tags)
    session.add(reminder)
    await session.commit()
    bus.publish(
        Event(
            "reminder.created",
            {"id": reminder.id, "list_id": reminder.list_id, "title": reminder.title},
            actor_id=user.id,
        )
    )
    return reminder_out(reminder)


@router.get("/{reminder_id}", response_model=ReminderOut)
async def get_one(reminder_id: int, user: CurrentUser, session: SessionDep) -> ReminderOut:
    """Return one reminder."""
    return reminder_out(await owned_reminder(session, user.id, reminder_id))


@router.patch("/{reminder_id}", response_model=ReminderOut)
async def change(
    reminder_id: int, body: ReminderUpdate, user: CurrentUser, session: SessionDep, bus: BusDep
) -> ReminderOut:
    """Change the fields given; ``"due_at": null`` clears the due date."""
    reminder = await owned_reminder(session, user.id, reminder_id)
    given = body.model_fields_set
    if body.list_id is not None and body.list_id != reminder.list_id:
        await owned_list(session, user.id, body.list_id)
        reminder.list_id = body.list_id
    if body.title is not None:
        reminder.title = body.title
    if body.notes is not None:
        reminder.notes = body.notes
    if "due_at" in given:
        reminder.due_at = body.due_at
    if body.priority is not None:
        reminder.priority = body.priority
    await session.commit()
    bus.publish(
        Event("reminder.updated", {"id": reminder_id, "fields": sorted(given)}, actor_id=user.id)
    )
    return reminder_out(await owned_reminder(session, user.id, reminder_id))


@router.delete("/{reminder_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete(reminder_id: int, user: CurrentUser, session: SessionDep, bus: BusDep) -> Response:
    """Delete a reminder."""
    reminder = await owned_reminder(session, user.id, reminder_id)
    await session.delete(reminder)
    await session.commit()
    bus.publish(Event("reminder.deleted", {"id": reminder_id}, actor_id=user.id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _set_done(
    reminder_id: int, done: bool, user: CurrentUser, session: SessionDep, bus: BusDep
) -> ReminderOut:
    reminder = await owned_reminder(session, user.id, reminder_id)
    changed = await set_completed(session, reminder.id, done)
    await session.commit()
    if changed:
        name = "reminder.completed" if done else "reminder.reopened"
        bus.publish(Event(name, {"id": reminder_id, "list_id": reminder.list_id}, actor_id=user.id))
    return reminder_out(await owned_reminder(session, user.id, reminder_id))


@router.post("/{reminder_id}/complete", response_model=ReminderOut)
async def complete(
    reminder_id: int, user: CurrentUser, session: SessionDep, bus: BusDep
) -> ReminderOut:
    """Mark a reminder done (doing it twice changes nothing)."""
    return await _set_done(reminder_id, True, user, session, bus)


@router.post("/{reminder_id}/reopen", response_model=ReminderOut)
async def reopen(
    reminder_id: int, user: CurrentUser, session: SessionDep, bus: BusDep
) -> ReminderOut:
    """Mark a reminder not done."""
    return await _set_done(reminder_id, False, user, session, bus)


@router.put("/{reminder_id}/tags/{name}", response_model=ReminderOut)
async def add_tag(
    reminder_id: int, name: TagName, user: CurrentUser, session: SessionDep, bus: BusDep
) -> ReminderOut:
    """Tag a reminder, creating the tag if the user has none by that name."""
    reminder = await owned_reminder(session, user.id, reminder_id)
    (tag,) = await ensure_tags(session, user.id, [name])
    if tag not in reminder.tags:
        reminder.tags.append(tag)
        await session.commit()
        bus.publish(
            Event("tag.attached", {"reminder_id": reminder_id, "tag": tag.name}, actor_id=user.id)
        )
    return reminder_out(await owned_reminder(session, user.id, reminder_id))


@router.delete("/{reminder_id}/tags/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_tag(
    reminder_id: int, name: TagName, user: CurrentUser, session: SessionDep, bus: BusDep
) -> Response:
    """Remove a tag from a reminder (the tag itself stays)."""
    reminder = await owned_reminder(session, user.id, reminder_id)
    tag = next((t for t in reminder.tags if t.name == name), None)
    if tag is None:
        raise not_found("Tag on this reminder")
    reminder.tags.remove(tag)
    await session.commit()
    bus.publish(Event("tag.detached", {"reminder_id": reminder_id, "tag": name}, actor_id=user.id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{reminder_id}/notify", status_code=status.HTTP_202_ACCEPTED)
async def notify(
    reminder_id: int, user: CurrentUser, session: SessionDep, pool: PoolDep
) -> dict[str, int]:
    """Queue a notification for a reminder now."""
    await owned_reminder(session, user.id, reminder_id)
    pool.enqueue(reminder_id)
    return {"queued": reminder_id}
