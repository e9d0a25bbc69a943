"""Notifications, reports, the audit trail, administration and health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select, text

from .. import audit, reports
from ..deps import AdminUser, BusDep, CurrentUser, PoolDep, SessionDep
from ..events import Event
from ..models import Reminder, ReminderList, Tag, User
from ..schemas import ActiveIn, UserOut

router = APIRouter()


@router.post("/notifications/dispatch-due", status_code=status.HTTP_202_ACCEPTED)
async def dispatch_due(
    user: CurrentUser, session: SessionDep, pool: PoolDep
) -> dict[str, list[int]]:
    """Queue a notification for each of the user's reminders that is due and not notified yet."""
    due = await session.scalars(
        select(Reminder.id)
        .join(Reminder.reminder_list)
        .where(
            ReminderList.owner_id == user.id,
            Reminder.due_at <= datetime.now(UTC),
            Reminder.completed_at.is_(None),
            Reminder.notified_at.is_(None),
        )
        .order_by(Reminder.id)
    )
    ids = list(due)
    for reminder_id in ids:
        pool.enqueue(reminder_id)
    return {"queued": ids}


@router.get("/reports/summary")
async def summary(user: CurrentUser) -> dict[str, Any]:
    """Return the user's report, built by the sync report generator in a worker thread."""
    return await run_in_threadpool(reports.summary_for_user, user.id)


@router.get("/audit")
async def audit_trail(
    user: CurrentUser,
    session: SessionDep,
    entity: str | None = None,
    entity_id: int | None = None,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[dict[str, Any]]:
    """Return what the current user did, newest first."""
    rows = await audit.entries(
        session, actor_id=user.id, entity=entity, entity_id=entity_id, action=action, limit=limit
    )
    return [audit.as_json(row) for row in rows]


@router.get("/admin/stats")
async def stats(admin: AdminUser, session: SessionDep) -> dict[str, int]:
    """Count what the database holds."""
    row = (
        await session.execute(
            select(
                select(func.count()).select_from(User).scalar_subquery().label("users"),
                select(func.count()).select_from(ReminderList).scalar_subquery().label("lists"),
                select(func.count()).select_from(Reminder).scalar_subquery().label("reminders"),
                select(func.count())
                .select_from(Reminder)
                .where(Reminder.completed_at.is_(None))
                .scalar_subquery()
                .label("open"),
                select(func.count()).select_from(Tag).scalar_subquery().label("tags"),
                select(func.count())
                .select_from(audit.audit_logs)
                .scalar_subquery()
                .label("audit_logs"),
            )
        )
    ).one()
    return dict(row._mapping)


@router.get("/admin/users", response_model=list[UserOut])
async def users(
    admin: AdminUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[User]:
    """Return every user, by id."""
    return list(await session.scalars(select(User).order_by(User.id).limit(limit).offset(offset)))


@router.patch("/admin/users/{user_id}", response_model=UserOut)
async def set_active(
    user_id: int, body: ActiveIn, admin: AdminUser, session: SessionDep, bus: BusDep
) -> User:
    """Activate or deactivate an account."""
    if user_id == admin.id and not body.is_active:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="You cannot deactivate yourself")
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="User not found")
    user.is_active = body.is_active
    await session.commit()
    name = "user.activated" if body.is_active else "user.deactivated"
    bus.publish(Event(name, {"id": user_id}, actor_id=admin.id))
    return user


@router.get("/health")
async def health(session: SessionDep) -> dict[str, str]:
    """Say whether the app can reach its database."""
    await session.execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}
