"""Reminder lists."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, BackgroundTasks, HTTPException, Response, status
from sqlalchemy import Row, func, select, update
from sqlalchemy.exc import IntegrityError

from ..db import SessionLocal
from ..deps import BusDep, CurrentUser, SessionDep
from ..events import Event, EventBus
from ..models import Reminder, ReminderList
from ..schemas import ListIn, ListOut, ListUpdate
from ..service import owned_list

router = APIRouter(prefix="/lists", tags=["lists"])


def _counts_query(owner_id: int):  # type: ignore[no-untyped-def]
    return (
        select(
            ReminderList.id,
            ReminderList.name,
            ReminderList.color,
            func.count(Reminder.id).label("reminder_count"),
            func.count(Reminder.id).filter(Reminder.completed_at.is_(None)).label("open_count"),
        )
        .outerjoin(Reminder, Reminder.list_id == ReminderList.id)
        .where(ReminderList.owner_id == owner_id)
        .group_by(ReminderList.id)
        .order_by(ReminderList.id)
    )


def _out(row: Row[tuple[int, str, str, int, int]]) -> ListOut:
    return ListOut(
        id=row.id,
        name=row.name,
        color=row.color,
        reminder_count=row.reminder_count,
        open_count=row.open_count,
    )


async def _one(session: SessionDep, owner_id: int, list_id: int) -> ListOut:
    row = (await session.execute(_counts_query(owner_id).where(ReminderList.id == list_id))).one()
    return _out(row)


def _conflict(name: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=f"You already have a list named {name!r}")


@router.get("", response_model=list[ListOut])
async def all_lists(user: CurrentUser, session: SessionDep) -> list[ListOut]:
    """Return the user's lists with their counts."""
    return [_out(row) for row in await session.execute(_counts_query(user.id))]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ListOut)
async def create_list(body: ListIn, user: CurrentUser, session: SessionDep, bus: BusDep) -> ListOut:
    """Create a list."""
    created = ReminderList(owner_id=user.id, name=body.name, color=body.color)
    session.add(created)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise _conflict(body.name) from None
    bus.publish(Event("list.created", {"id": created.id, "name": created.name}, actor_id=user.id))
    return ListOut(
        id=created.id, name=created.name, color=created.color, reminder_count=0, open_count=0
    )


@router.get("/{list_id}", response_model=ListOut)
async def get_list(list_id: int, user: CurrentUser, session: SessionDep) -> ListOut:
    """Return one list with its counts."""
    await owned_list(session, user.id, list_id)
    return await _one(session, user.id, list_id)


@router.patch("/{list_id}", response_model=ListOut)
async def update_list(
    list_id: int, body: ListUpdate, user: CurrentUser, session: SessionDep, bus: BusDep
) -> ListOut:
    """Rename or recolour a list."""
    found = await owned_list(session, user.id, list_id)
    if body.name is not None:
        found.name = body.name
    if body.color is not None:
        found.color = body.color
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise _conflict(body.name or "") from None
    bus.publish(Event("list.updated", {"id": list_id}, actor_id=user.id))
    return await _one(session, user.id, list_id)


@router.delete("/{list_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_list(
    list_id: int, user: CurrentUser, session: SessionDep, bus: BusDep
) -> Response:
    """Delete a list and its reminders."""
    found = await owned_list(session, user.id, list_id)
    await session.delete(found)
    await session.commit()
    bus.publish(Event("list.deleted", {"id": list_id}, actor_id=user.id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def complete_all(list_id: int, actor_id: int, bus: EventBus) -> list[int]:
    """Complete every open reminder of a list (runs after the response is sent)."""
    now = datetime.now(UTC)
    async with SessionLocal() as session:
        done = await session.scalars(
            update(Reminder)
            .where(Reminder.list_id == list_id, Reminder.completed_at.is_(None))
            .values(completed_at=now, updated_at=now)
            .returning(Reminder.id)
        )
        ids = sorted(done)
        await session.commit()
    for reminder_id in ids:
        bus.publish(Event("reminder.completed", {"id": reminder_id, "list_id": list_id}, actor_id))
    return ids


@router.post("/{list_id}/complete-all", status_code=status.HTTP_202_ACCEPTED)
async def complete_all_later(
    list_id: int,
    user: CurrentUser,
    session: SessionDep,
    bus: BusDep,
    background: BackgroundTasks,
) -> dict[str, int]:
    """Accept the request; complete the list's open reminders in the background."""
    counts = await get_list(list_id, user, session)
    background.add_task(complete_all, list_id, user.id, bus)
    return {"list_id": list_id, "open": counts.open_count}
