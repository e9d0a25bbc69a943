"""Fixtures as the FastAPI full-stack template writes them: nothing here knows about sqlsandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from app import crud
from app.db import engine
from app.main import app
from app.models import Item, User
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session


@pytest.fixture(scope="session", autouse=True)
def db() -> Iterator[Session]:
    with Session(engine) as session:
        crud.init_db(session)  # a real commit, check-then-insert
        yield session
        session.execute(delete(Item))
        session.execute(delete(User))
        session.commit()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def superuser_id(client: TestClient) -> int:
    return client.get("/users/admin@example.com").json()["id"]
