"""What the app does: each function commits, as app code usually does."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Todo, User


def register(session: Session, email: str) -> User:
    """Create a user; the email must not be taken."""
    user = User(email=email)
    session.add(user)
    session.commit()
    return user


def add_todo(session: Session, user: User, title: str) -> Todo:
    """Give *user* a new open item."""
    todo = Todo(owner=user, title=title)
    session.add(todo)
    session.commit()
    return todo


def complete(session: Session, todo_id: int) -> None:
    """Mark an item done."""
    todo = session.get_one(Todo, todo_id)
    todo.done = True
    session.commit()


def open_count(session: Session) -> int:
    """Count the open items of every user."""
    return session.scalar(select(func.count()).select_from(Todo).where(Todo.done.is_(False))) or 0
