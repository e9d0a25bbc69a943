"""The API through Starlette's TestClient (the app runs in another thread)."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_create_item(client: TestClient) -> None:
    response = client.post("/items/", json={"name": "Widget", "price": 9.5})
    assert response.status_code == 201
    assert response.json() == {
        "id": 1,
        "name": "Widget",
        "price": 9.5,
        "category_id": None,
        "in_stock": True,
    }


def test_read_item(client: TestClient) -> None:
    client.post("/items/", json={"name": "Widget", "price": 9.5})
    response = client.get("/items/1")
    assert response.status_code == 200
    assert response.json()["name"] == "Widget"


def test_item_names_are_unique(client: TestClient) -> None:
    assert client.post("/items/", json={"name": "Gadget", "price": 20}).status_code == 201
    response = client.post("/items/", json={"name": "Gadget", "price": 25})
    assert response.status_code == 409


def test_list_items(client: TestClient) -> None:
    for name in ("Widget", "Gadget", "Doohickey"):
        client.post("/items/", json={"name": name, "price": 1})
    names = [item["name"] for item in client.get("/items/").json()]
    assert names == ["Widget", "Gadget", "Doohickey"]


def test_update_item(client: TestClient) -> None:
    client.post("/items/", json={"name": "Widget", "price": 9.5})
    response = client.patch("/items/1", json={"in_stock": False})
    assert response.json()["in_stock"] is False
    assert client.get("/items/", params={"in_stock": True}).json() == []


def test_delete_item(client: TestClient) -> None:
    client.post("/items/", json={"name": "Widget", "price": 9.5})
    assert client.delete("/items/1").status_code == 204
    assert client.get("/items/1").status_code == 404


def test_items_in_a_category(client: TestClient) -> None:
    category = client.post("/categories/", json={"name": "Tools"}).json()
    assert category["id"] == 1
    client.post("/items/", json={"name": "Hammer", "price": 12, "category_id": 1})
    assert client.get("/items/1").json()["category_id"] == 1


def test_stats_start_empty(client: TestClient) -> None:
    assert client.get("/stats").json() == {"items": 0, "stock_value": 0.0}
