"""The API through httpx.AsyncClient, as FastAPI's "async tests" page shows."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

pytestmark = pytest.mark.anyio


async def test_create_and_read(async_client: AsyncClient) -> None:
    response = await async_client.post("/items/", json={"name": "Widget", "price": 3})
    assert response.status_code == 201
    assert response.json()["id"] == 1
    assert (await async_client.get("/items/1")).json()["name"] == "Widget"


async def test_stock_value(async_client: AsyncClient) -> None:
    await async_client.post("/items/", json={"name": "Widget", "price": 3})
    await async_client.post("/items/", json={"name": "Gadget", "price": 4.5})
    assert (await async_client.get("/stats")).json() == {"items": 2, "stock_value": 7.5}


async def test_no_items_yet(async_client: AsyncClient) -> None:
    assert (await async_client.get("/items/")).json() == []
