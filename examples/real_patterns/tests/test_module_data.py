"""Data from a module-scoped fixture: every test sees it, then starts right after it.

The fixture makes item 1 through the API. Each test in the module sees it,
none sees another test's items, its own first item is item 2 in any order,
and no job lock of the test before it is still held.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def module_item(client: TestClient) -> dict[str, Any]:
    return client.post("/items", json={"title": "from the module"}).json()


def test_module_item_is_item_1(client: TestClient, module_item: dict[str, Any]) -> None:
    assert module_item["id"] == 1
    assert client.get("/items/1").json()["title"] == "from the module"


@pytest.mark.parametrize("n", range(3))
def test_each_test_makes_item_2(client: TestClient, module_item: dict[str, Any], n: int) -> None:
    assert client.get("/items/2").status_code == 404
    assert client.post("/items", json={"title": f"test {n}"}).json()["id"] == 2
    assert client.get("/jobs/claimed").json() == {"held": 0}
    client.post(f"/jobs/{n}/claim")
