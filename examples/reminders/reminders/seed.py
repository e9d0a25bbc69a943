"""Sample data with explicit ids: 2 users, 2 lists, 6 reminders, 4 tags.

Sequences are moved past the explicit ids (the next row of every table gets
id 101), as a real seed script must. sqlsandbox runs :func:`load` once into
the template (``seed = "reminders.seed:load"``); ``python -m reminders.seed``
loads a development database (the app's settings, or the URL given).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from sqlalchemy import Connection, create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from .models import Reminder, ReminderList, Tag, User, reminder_tags
from .security import hash_password

FIRST_FREE_ID = 101

# Sample passwords are hashed cheaply: they are not secrets, and tests log in often.
SAMPLE_HASH_ITERATIONS = 1000


def _at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


USERS = [
    {
        "id": 1,
        "email": "alice@example.com",
        "name": "Alice",
        "password": "alice-password",
        "is_admin": True,
    },
    {
        "id": 2,
        "email": "bob@example.com",
        "name": "Bob",
        "password": "bob-password",
        "is_admin": False,
    },
]
LISTS = [
    {"id": 1, "owner_id": 1, "name": "Home", "color": "#34c759"},
    {"id": 2, "owner_id": 2, "name": "Work", "color": "#ff9500"},
]
REMINDERS = [
    {
        "id": 1,
        "list_id": 1,
        "title": "Buy milk",
        "notes": "Two litres, oat",
        "due_at": _at("2024-01-05T09:00:00"),
        "priority": 1,
        "completed_at": None,
    },
    {
        "id": 2,
        "list_id": 1,
        "title": "Pay rent!",
        "notes": "",
        "due_at": _at("2024-02-01T08:00:00"),
        "priority": 3,
        "completed_at": None,
    },
    {
        "id": 3,
        "list_id": 1,
        "title": "Book dentist",
        "notes": "Yearly check-up",
        "due_at": _at("2099-03-10T10:30:00"),
        "priority": 2,
        "completed_at": _at("2024-03-01T12:00:00"),
    },
    {
        "id": 4,
        "list_id": 1,
        "title": "Water the plants",
        "notes": "Balcony and kitchen",
        "due_at": None,
        "priority": 0,
        "completed_at": None,
    },
    {
        "id": 5,
        "list_id": 2,
        "title": "Prepare quarterly report",
        "notes": "Numbers from finance",
        "due_at": _at("2099-04-01T17:00:00"),
        "priority": 2,
        "completed_at": None,
    },
    {
        "id": 6,
        "list_id": 2,
        "title": "Team retro notes",
        "notes": "Share with the team",
        "due_at": _at("2024-01-20T15:00:00"),
        "priority": 0,
        "completed_at": _at("2024-01-21T09:00:00"),
    },
]
TAGS = [
    {"id": 1, "owner_id": 1, "name": "errands"},
    {"id": 2, "owner_id": 1, "name": "health"},
    {"id": 3, "owner_id": 1, "name": "urgent"},
    {"id": 4, "owner_id": 2, "name": "meetings"},
]
REMINDER_TAGS = [
    {"reminder_id": 1, "tag_id": 1},
    {"reminder_id": 2, "tag_id": 1},
    {"reminder_id": 2, "tag_id": 3},
    {"reminder_id": 3, "tag_id": 2},
    {"reminder_id": 5, "tag_id": 4},
    {"reminder_id": 6, "tag_id": 4},
]
SEQUENCES = ("users_id_seq", "reminder_lists_id_seq", "reminders_id_seq", "tags_id_seq")


def insert_sample_data(conn: Connection) -> None:
    """Insert the sample rows on *conn* (in its transaction) and move the sequences on."""
    users = [
        {
            **{k: v for k, v in user.items() if k != "password"},
            "password_hash": hash_password(
                str(user["password"]), iterations=SAMPLE_HASH_ITERATIONS
            ),
        }
        for user in USERS
    ]
    conn.execute(insert(User), users)
    conn.execute(insert(ReminderList), LISTS)
    conn.execute(insert(Reminder), REMINDERS)
    conn.execute(insert(Tag), TAGS)
    conn.execute(insert(reminder_tags), REMINDER_TAGS)
    for sequence in SEQUENCES:
        conn.execute(text(f"SELECT setval('{sequence}', {FIRST_FREE_ID - 1})"))


def load(url: str) -> None:
    """Load the sample data into the database at *url* (any PostgreSQL URL form)."""
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            insert_sample_data(conn)
    finally:
        engine.dispose()


if __name__ == "__main__":
    from .settings import get_settings

    load(sys.argv[1] if len(sys.argv) > 1 else get_settings().sync_database_url)
