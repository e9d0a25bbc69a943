"""State a rollback does not undo: every test starts as on a fresh connection."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

twice = pytest.mark.parametrize("n", range(2))


@twice
def test_advisory_locks(client: TestClient, n: int) -> None:
    assert client.get("/jobs/claimed").json() == {"held": 0}
    assert client.post("/jobs/42/claim").json() == {"held": 1}


@twice
def test_prepared_statements(client: TestClient, n: int) -> None:
    client.post("/items", json={"title": "counted"})
    assert client.get("/reports/item-count").json() == {"items": 1}


@twice
def test_listen(client: TestClient, n: int) -> None:
    assert client.get("/events/channels").json() == {"channels": []}
    client.post("/events/subscribe")


@twice
def test_session_settings(client: TestClient, n: int) -> None:
    assert client.get("/settings/statement-timeout").json() == {"statement_timeout": "0"}
    assert client.post("/settings/slow-queries").json() == {"statement_timeout": "5s"}
