"""Tags."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..deps import BusDep, CurrentUser, SessionDep
from ..events import Event
from ..models import Tag, reminder_tags
from ..schemas import TagIn, TagOut
from ..service import not_found

router = APIRouter(prefix="/tags", tags=["tags"])


async def _owned(session: SessionDep, owner_id: int, tag_id: int) -> Tag:
    tag = await session.scalar(select(Tag).where(Tag.id == tag_id, Tag.owner_id == owner_id))
    if tag is None:
        raise not_found("Tag")
    return tag


def _conflict(name: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=f"You already have a tag named {name!r}")


@router.get("", response_model=list[TagOut])
async def all_tags(user: CurrentUser, session: SessionDep) -> list[TagOut]:
    """Return the user's tags by name, with how many reminders carry each."""
    rows = await session.execute(
        select(Tag.id, Tag.name, func.count(reminder_tags.c.reminder_id).label("n"))
        .outerjoin(reminder_tags, reminder_tags.c.tag_id == Tag.id)
        .where(Tag.owner_id == user.id)
        .group_by(Tag.id)
        .order_by(Tag.name)
    )
    return [TagOut(id=row.id, name=row.name, reminder_count=row.n) for row in rows]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TagOut)
async def create_tag(body: TagIn, user: CurrentUser, session: SessionDep, bus: BusDep) -> TagOut:
    """Create a tag."""
    tag = Tag(owner_id=user.id, name=body.name)
    session.add(tag)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise _conflict(body.name) from None
    bus.publish(Event("tag.created", {"id": tag.id, "name": tag.name}, actor_id=user.id))
    return TagOut(id=tag.id, name=tag.name, reminder_count=0)


@router.patch("/{tag_id}", response_model=TagOut)
async def rename_tag(
    tag_id: int, body: TagIn, user: CurrentUser, session: SessionDep, bus: BusDep
) -> TagOut:
    """Rename a tag."""
    tag = await _owned(session, user.id, tag_id)
    tag.name = body.name
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise _conflict(body.name) from None
    bus.publish(Event("tag.renamed", {"id": tag_id, "name": body.name}, actor_id=user.id))
    count = await session.scalar(
        select(func.count()).select_from(reminder_tags).where(reminder_tags.c.tag_id == tag_id)
    )
    return TagOut(id=tag_id, name=body.name, reminder_count=count or 0)


@router.delete("/{tag_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tag(tag_id: int, user: CurrentUser, session: SessionDep, bus: BusDep) -> Response:
    """Delete a tag; reminders lose it."""
    tag = await _owned(session, user.id, tag_id)
    await session.delete(tag)
    await session.commit()
    bus.publish(Event("tag.deleted", {"id": tag_id}, actor_id=user.id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
