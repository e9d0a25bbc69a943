"""The app's own functions commit; every test still starts from an empty database."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from todo_app.db import SessionLocal
from todo_app.models import Todo, User
from todo_app.service import add_todo, complete, open_count, register

from sqlsandbox.pytest_plugin import Unique


def test_register_and_read_back(db_session: Session, unique: Unique) -> None:
    email = unique.email()
    register(db_session, email)
    assert db_session.scalars(select(User.email)).all() == [email]


def test_an_email_is_taken_once(db_session: Session, unique: Unique) -> None:
    email = unique.email()
    register(db_session, email)
    with pytest.raises(IntegrityError):
        register(db_session, email)
    db_session.rollback()
    # The app's rollback undid only its own work: the first user is still there.
    assert db_session.scalars(select(User.email)).all() == [email]


def test_complete_an_item(db_session: Session, unique: Unique) -> None:
    user = register(db_session, unique.email())
    first = add_todo(db_session, user, "write tests")
    add_todo(db_session, user, "ship")
    complete(db_session, first.id)
    assert open_count(db_session) == 1
    assert [t.title for t in user.todos if t.done] == ["write tests"]


def test_the_apps_own_sessions_share_the_test_transaction(unique: Unique) -> None:
    # No fixture: the app's engine (built at import time) is routed to this test.
    with SessionLocal() as session:
        register(session, unique.email())
    with SessionLocal() as other:
        assert open_count(other) == 0
        assert len(other.scalars(select(User)).all()) == 1


@pytest.mark.parametrize("items", range(1, 11))
def test_each_test_starts_empty(db_session: Session, unique: Unique, items: int) -> None:
    # Run in parallel, these tests would see each other's rows without isolation.
    assert open_count(db_session) == 0
    user = register(db_session, unique.email())
    for n in range(items):
        add_todo(db_session, user, f"item {n}")
    assert open_count(db_session) == items
    assert db_session.query(Todo).count() == items


@pytest.mark.sandbox(isolation="database")
def test_schema_changes_get_a_database_of_their_own(db_session: Session) -> None:
    db_session.execute(text("ALTER TABLE todos ADD COLUMN due date"))
    db_session.commit()
    assert "due" in {c["name"] for c in inspect(db_session.connection()).get_columns("todos")}
