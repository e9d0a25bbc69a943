"""Small helpers the test modules share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reminders.events import Event
from reminders.security import create_access_token

# Ids of the sample data (reminders/seed.py); the next id of every table is 101.
ALICE = 1
BOB = 2
HOME = 1  # Alice's list: reminders 1-4
WORK = 2  # Bob's list: reminders 5-6
FIRST_NEW_ID = 101
TEST_PASSWORD = "test-password"


def bearer(user_id: int) -> dict[str, str]:
    """Return the Authorization header for *user_id*."""
    return {"Authorization": f"Bearer {create_access_token(user_id)}"}


def named(name: str) -> Callable[[Any], bool]:
    """Return a Probe match for events called *name*."""
    return lambda event: isinstance(event, Event) and event.name == name


def ids(page: dict[str, Any]) -> list[int]:
    """Return the ids of a page of reminders, in order."""
    return [item["id"] for item in page["items"]]
