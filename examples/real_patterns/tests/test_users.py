"""The superuser from the session fixture, and users the tests add."""

from __future__ import annotations

import pytest
from app import crud
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session


def test_superuser_exists(client: TestClient, superuser_id: int) -> None:
    assert superuser_id == 1
    assert client.get("/users/admin@example.com").json()["is_superuser"] is True


@pytest.mark.parametrize("n", range(3))
def test_first_new_user_is_user_2(client: TestClient, n: int) -> None:
    assert client.get("/users/count").json() == {"count": 1}
    assert client.post("/users", json={"email": f"user{n}@example.com"}).json()["id"] == 2


@pytest.mark.parametrize("n", range(3))
def test_user_made_with_the_shared_session(client: TestClient, db: Session, n: int) -> None:
    user = crud.create_user(db, f"shared{n}@example.com")
    assert user.id == 2
    assert client.get(f"/users/shared{n}@example.com").json()["id"] == 2
    assert client.get("/users/count").json() == {"count": 2}
