"""Audit trail: rows in ``audit_logs``, a table that only the migrations create."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, column, insert, select, table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

# A lightweight table construct, not part of Base.metadata: create_all never sees it.
audit_logs = table(
    "audit_logs",
    column("id", BigInteger),
    column("actor_id", Integer),
    column("action", String),
    column("entity", String),
    column("entity_id", Integer),
    column("details", JSONB),
    column("created_at", DateTime(timezone=True)),
)


async def record(
    session: AsyncSession,
    action: str,
    *,
    actor_id: int | None,
    entity: str,
    entity_id: int | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit row to *session*'s transaction (the caller commits)."""
    await session.execute(
        insert(audit_logs).values(
            actor_id=actor_id,
            action=action,
            entity=entity,
            entity_id=entity_id,
            details=details or {},
        )
    )


async def entries(
    session: AsyncSession,
    *,
    actor_id: int | None = None,
    entity: str | None = None,
    entity_id: int | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Return audit rows, newest first, filtered by whatever is given."""
    query = select(audit_logs).order_by(audit_logs.c.id.desc()).limit(limit)
    if actor_id is not None:
        query = query.where(audit_logs.c.actor_id == actor_id)
    if entity is not None:
        query = query.where(audit_logs.c.entity == entity)
    if entity_id is not None:
        query = query.where(audit_logs.c.entity_id == entity_id)
    if action is not None:
        query = query.where(audit_logs.c.action == action)
    rows = (await session.execute(query)).mappings().all()
    return [dict(row) for row in rows]


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    """Return an audit row ready for a JSON response."""
    created: datetime = row["created_at"]
    return {**row, "created_at": created.isoformat()}
