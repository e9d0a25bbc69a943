"""The API, including endpoints that leave state on their database connection."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from . import crud
from .config import settings
from .db import get_session
from .models import Item, User

app = FastAPI()
SessionDep = Annotated[Session, Depends(get_session)]


class ItemIn(BaseModel):
    title: str


class UserIn(BaseModel):
    email: str


@app.post("/items")
def create_item(body: ItemIn, session: SessionDep) -> dict[str, object]:
    owner = crud.get_user_by_email(session, settings.FIRST_SUPERUSER)
    if owner is None:
        raise HTTPException(409, "no superuser")
    item = crud.create_item(session, body.title, owner.id)
    return {"id": item.id, "title": item.title, "owner_id": item.owner_id}


@app.get("/items/{item_id}")
def read_item(item_id: int, session: SessionDep) -> dict[str, object]:
    item = session.get(Item, item_id)
    if item is None:
        raise HTTPException(404)
    return {"id": item.id, "title": item.title, "owner_id": item.owner_id}


@app.post("/users")
def create_user(body: UserIn, session: SessionDep) -> dict[str, object]:
    user = crud.create_user(session, body.email)
    return {"id": user.id, "email": user.email}


@app.get("/users/count")
def count_users(session: SessionDep) -> dict[str, int]:
    return {"count": session.scalar(select(func.count()).select_from(User)) or 0}


@app.get("/users/{email}")
def read_user(email: str, session: SessionDep) -> dict[str, object]:
    user = crud.get_user_by_email(session, email)
    if user is None:
        raise HTTPException(404)
    return {"id": user.id, "email": user.email, "is_superuser": user.is_superuser}


# -- endpoints that leave state on the connection ------------------------------------


@app.post("/jobs/{key}/claim")
def claim_job(key: int, session: SessionDep) -> dict[str, int]:
    """Take a session-level advisory lock, as job runners do (and never release it)."""
    session.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
    session.commit()
    return {"held": _advisory_locks(session)}


@app.get("/jobs/claimed")
def claimed_jobs(session: SessionDep) -> dict[str, int]:
    return {"held": _advisory_locks(session)}


def _advisory_locks(session: Session) -> int:
    return session.scalar(
        text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
    )


@app.get("/reports/item-count")
def item_count_report(session: SessionDep) -> dict[str, int]:
    """Prepare a statement by name, as reporting code does (and never deallocate it)."""
    session.execute(text("PREPARE item_count AS SELECT count(*) FROM items"))
    return {"items": session.scalar(text("EXECUTE item_count"))}


@app.post("/events/subscribe")
def subscribe(session: SessionDep) -> dict[str, list[str]]:
    session.execute(text("LISTEN item_events"))
    session.commit()
    return {"channels": _channels(session)}


@app.get("/events/channels")
def channels(session: SessionDep) -> dict[str, list[str]]:
    return {"channels": _channels(session)}


def _channels(session: Session) -> list[str]:
    return list(session.scalars(text("SELECT pg_listening_channels()")))


@app.post("/settings/slow-queries")
def limit_slow_queries(session: SessionDep) -> dict[str, str]:
    """Change a session setting (after a commit it would outlive the request)."""
    session.execute(text("SET statement_timeout = '5s'"))
    session.commit()
    return {"statement_timeout": session.scalar(text("SHOW statement_timeout"))}


@app.get("/settings/statement-timeout")
def statement_timeout(session: SessionDep) -> dict[str, str]:
    return {"statement_timeout": session.scalar(text("SHOW statement_timeout"))}
