"""Subscribers of the app's event bus."""

from __future__ import annotations

from typing import Any

from . import audit
from .db import SessionLocal
from .events import Event, EventBus

ENTITY_ID_KEYS = ("id", "reminder_id", "list_id", "tag_id", "user_id")


def _entity_id(data: dict[str, Any]) -> int | None:
    for key in ENTITY_ID_KEYS:
        value = data.get(key)
        if isinstance(value, int):
            return value
    return None


async def write_audit_log(event: Event) -> None:
    """Keep an audit row for every domain event."""
    entity = event.name.partition(".")[0]
    async with SessionLocal() as session:
        await audit.record(
            session,
            event.name,
            actor_id=event.actor_id,
            entity=entity,
            entity_id=_entity_id(event.data),
            details=event.data,
        )
        await session.commit()


AUDITED = ("user.*", "list.*", "reminder.*", "tag.*")


def register(bus: EventBus) -> list[int]:
    """Subscribe the app's handlers to *bus*; return the tokens.

    Notification events are not audited here: the workers write their own rows.
    """
    return [bus.subscribe(pattern, write_audit_log) for pattern in AUDITED]
