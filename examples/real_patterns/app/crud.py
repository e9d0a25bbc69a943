"""What the endpoints and the test fixtures share."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .config import settings
from .models import Item, User


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email == email)).first()


def create_user(session: Session, email: str, *, is_superuser: bool = False) -> User:
    user = User(email=email, is_superuser=is_superuser)
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def init_db(session: Session) -> User:
    """Create the first superuser unless it exists (check, then insert)."""
    user = get_user_by_email(session, settings.FIRST_SUPERUSER)
    if user is None:
        user = create_user(session, settings.FIRST_SUPERUSER, is_superuser=True)
    return user


def create_item(session: Session, title: str, owner_id: int) -> Item:
    item = Item(title=title, owner_id=owner_id)
    session.add(item)
    session.commit()
    session.refresh(item)
    return item
