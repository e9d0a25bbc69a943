"""Fixtures in the style of real FastAPI suites.

There is no database set-up here: sqlsandbox builds the schema from the
Alembic migrations (with the sample data) once, points DATABASE_URL and
SYNC_DATABASE_URL at this worker's database before the app is imported, and
isolates every test (see ``[tool.sqlsandbox]`` in ../pyproject.toml).
"""

from __future__ import annotations

import os

# Accounts made by tests need no expensive hashing (the seed's are cheap too).
os.environ.setdefault("PASSWORD_ITERATIONS", "1000")

from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import ALICE, BOB, TEST_PASSWORD, bearer
from httpx import ASGITransport, AsyncClient
from reminders.events import bus
from reminders.main import app as reminders_app
from reminders.main import lifespan
from reminders.models import User
from reminders.security import create_access_token, hash_password
from sqlalchemy.ext.asyncio import AsyncSession

import sqlsandbox
from sqlsandbox.pytest_plugin import Unique


@pytest.fixture
def app() -> FastAPI:
    return reminders_app


@pytest.fixture
async def started_app(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run the app's lifespan: the event bus and the notification workers."""
    async with lifespan(app):
        yield app


@pytest.fixture
async def client(started_app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=started_app), base_url="http://test") as c:
        yield c


@pytest.fixture
async def bare_client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """A client for the app without its lifespan (no bus, no workers)."""
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as c:
        yield c


@pytest.fixture
def sync_client(app: FastAPI) -> Iterator[TestClient]:
    """Starlette's TestClient: the app runs in another thread, on its own loop."""
    with TestClient(app) as c:
        yield c


@pytest.fixture
async def test_user(async_db_session: AsyncSession, unique: Unique) -> User:
    user = User(email=unique.email(), name="Test User", password_hash=hash_password(TEST_PASSWORD))
    async_db_session.add(user)
    await async_db_session.commit()
    await async_db_session.refresh(user)
    return user


@pytest.fixture
def test_user_token(test_user: User) -> str:
    return create_access_token(test_user.id)


@pytest.fixture
def auth_headers(test_user_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {test_user_token}"}


@pytest.fixture
def alice_headers() -> dict[str, str]:
    return bearer(ALICE)


@pytest.fixture
def bob_headers() -> dict[str, str]:
    return bearer(BOB)


@pytest.fixture
def events() -> Iterator[sqlsandbox.Probe]:
    """Every event the app publishes on its bus during the test."""
    probe = sqlsandbox.Probe("app events")
    token = bus.subscribe("*", lambda event: probe.put(event))
    yield probe
    bus.unsubscribe(token)
