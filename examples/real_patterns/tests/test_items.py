"""Hard-coded ids: every test's first item is item 1."""

from __future__ import annotations

from app import crud
from app.models import Item
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session


def test_create_item_gets_id_1(client: TestClient) -> None:
    response = client.post("/items", json={"title": "first"})
    assert response.json() == {"id": 1, "title": "first", "owner_id": 1}


def test_read_items_1_and_2(client: TestClient) -> None:
    client.post("/items", json={"title": "one"})
    client.post("/items", json={"title": "two"})
    assert client.get("/items/1").json()["title"] == "one"
    assert client.get("/items/2").json()["title"] == "two"


def test_item_made_with_the_shared_session(
    client: TestClient, db: Session, superuser_id: int
) -> None:
    item = crud.create_item(db, "from the session", superuser_id)
    assert item.id == 1
    assert client.get("/items/1").json()["title"] == "from the session"


def test_no_items_left_by_other_tests(db: Session) -> None:
    assert db.scalar(select(func.count()).select_from(Item)) == 0


def test_missing_item(client: TestClient) -> None:
    assert client.get("/items/1").status_code == 404
