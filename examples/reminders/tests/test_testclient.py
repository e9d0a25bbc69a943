"""The same app through Starlette's TestClient: sync tests, the app in another thread and loop."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from helpers import ALICE, BOB, HOME, bearer, ids
from reminders.events import bus


def test_health(sync_client: TestClient) -> None:
    assert sync_client.get("/health").json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize(
    ("email", "password", "status"),
    [
        ("alice@example.com", "alice-password", 200),
        ("bob@example.com", "bob-password", 200),
        ("alice@example.com", "bob-password", 401),
        ("carol@example.com", "carol-password", 401),
    ],
)
def test_login(sync_client: TestClient, email: str, password: str, status: int) -> None:
    response = sync_client.post("/auth/token", json={"email": email, "password": password})
    assert response.status_code == status


def test_register_then_use_the_token(sync_client: TestClient) -> None:
    created = sync_client.post(
        "/auth/register", json={"email": "tc@example.com", "password": "s3cret-pass", "name": "TC"}
    )
    assert created.status_code == 201
    token = sync_client.post(
        "/auth/token", json={"email": "tc@example.com", "password": "s3cret-pass"}
    ).json()["access_token"]
    me = sync_client.get("/users/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert (me["id"], me["email"]) == (created.json()["id"], "tc@example.com")


@pytest.mark.parametrize(("user_id", "names"), [(ALICE, ["Home"]), (BOB, ["Work"])])
def test_lists(sync_client: TestClient, user_id: int, names: list[str]) -> None:
    assert [
        item["name"] for item in sync_client.get("/lists", headers=bearer(user_id)).json()
    ] == names


@pytest.mark.parametrize("reminder_id", [1, 2, 3, 4])
def test_read_sample_reminders(sync_client: TestClient, reminder_id: int) -> None:
    response = sync_client.get(f"/reminders/{reminder_id}", headers=bearer(ALICE))
    assert response.status_code == 200
    assert response.json()["id"] == reminder_id


@pytest.mark.parametrize("reminder_id", [5, 6])
def test_other_peoples_reminders_are_hidden(sync_client: TestClient, reminder_id: int) -> None:
    assert sync_client.get(f"/reminders/{reminder_id}", headers=bearer(ALICE)).status_code == 404


def test_create_then_find(sync_client: TestClient) -> None:
    headers = bearer(ALICE)
    created = sync_client.post(
        "/reminders",
        headers=headers,
        json={"list_id": HOME, "title": "Renew passport", "tags": ["admin"]},
    ).json()
    page = sync_client.get("/reminders", headers=headers, params={"q": "passport"}).json()
    assert ids(page) == [created["id"]]
    tagged = sync_client.get("/reminders", headers=headers, params={"tag": "admin"}).json()
    assert ids(tagged) == [created["id"]]


def test_every_test_starts_from_the_sample_data(sync_client: TestClient) -> None:
    # The test above created a reminder; this one (on any worker, in any order) never sees it.
    page = sync_client.get("/reminders", headers=bearer(ALICE), params={"q": "passport"}).json()
    assert page["total"] == 0
    assert sync_client.get("/reminders", headers=bearer(ALICE)).json()["total"] == 4


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"title": "Buy bread"}, "title", "Buy bread"),
        ({"priority": 3}, "priority", 3),
        ({"notes": ""}, "notes", ""),
    ],
)
def test_update(
    sync_client: TestClient, change: dict[str, object], field: str, value: object
) -> None:
    response = sync_client.patch("/reminders/1", headers=bearer(ALICE), json=change)
    assert response.json()[field] == value
    assert sync_client.get("/reminders/1", headers=bearer(ALICE)).json()[field] == value


def test_complete_and_reopen(sync_client: TestClient) -> None:
    headers = bearer(ALICE)
    assert sync_client.post("/reminders/4/complete", headers=headers).json()["completed"] is True
    assert sync_client.get("/lists/1", headers=headers).json()["open_count"] == 2
    assert sync_client.post("/reminders/4/reopen", headers=headers).json()["completed"] is False
    assert sync_client.get("/lists/1", headers=headers).json()["open_count"] == 3


def test_delete(sync_client: TestClient) -> None:
    headers = bearer(BOB)
    assert sync_client.delete("/reminders/6", headers=headers).status_code == 204
    assert ids(sync_client.get("/reminders", headers=headers).json()) == [5]


def test_tags(sync_client: TestClient) -> None:
    headers = bearer(BOB)
    sync_client.put("/reminders/5/tags/finance", headers=headers)
    tags = {
        t["name"]: t["reminder_count"] for t in sync_client.get("/tags", headers=headers).json()
    }
    assert tags == {"finance": 1, "meetings": 2}


def test_validation_errors(sync_client: TestClient) -> None:
    response = sync_client.post(
        "/reminders", headers=bearer(ALICE), json={"list_id": HOME, "title": ""}
    )
    assert response.status_code == 422


def test_admin_stats_count_the_sample_data(sync_client: TestClient) -> None:
    stats = sync_client.get("/admin/stats", headers=bearer(ALICE)).json()
    assert stats == {"users": 2, "lists": 2, "reminders": 6, "open": 4, "tags": 4, "audit_logs": 0}


def test_admin_only(sync_client: TestClient) -> None:
    response = sync_client.get("/admin/stats", headers=bearer(BOB))
    assert (response.status_code, response.json()) == (403, {"detail": "Administrators only"})


def test_deactivate_a_user(sync_client: TestClient) -> None:
    response = sync_client.patch("/admin/users/2", headers=bearer(ALICE), json={"is_active": False})
    assert response.json()["is_active"] is False
    assert sync_client.get("/users/me", headers=bearer(BOB)).status_code == 403
    login = sync_client.post(
        "/auth/token", json={"email": "bob@example.com", "password": "bob-password"}
    )
    assert login.status_code == 403


def test_admins_cannot_deactivate_themselves(sync_client: TestClient) -> None:
    response = sync_client.patch("/admin/users/1", headers=bearer(ALICE), json={"is_active": False})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("limit", "offset", "expected"), [(50, 0, [1, 2]), (1, 0, [1]), (1, 1, [2]), (5, 2, [])]
)
def test_admin_user_pages(
    sync_client: TestClient, limit: int, offset: int, expected: list[int]
) -> None:
    users = sync_client.get(
        "/admin/users", headers=bearer(ALICE), params={"limit": limit, "offset": offset}
    )
    assert [u["id"] for u in users.json()] == expected


def test_the_lifespan_runs_the_workers(sync_client: TestClient) -> None:
    # TestClient runs the lifespan in its own thread and loop; reach them through its portal.
    app = sync_client.app
    response = sync_client.post("/reminders/2/notify", headers=bearer(ALICE))
    assert response.status_code == 202
    sync_client.portal.call(app.state.notifications.join)  # type: ignore[attr-defined,union-attr]
    assert [n.reminder_id for n in app.state.outbox.sent] == [2]  # type: ignore[attr-defined]
    assert sync_client.get("/reminders/2", headers=bearer(ALICE)).json()["notified_at"] is not None


def test_events_reach_the_audit_trail(sync_client: TestClient) -> None:
    sync_client.post("/tags", headers=bearer(BOB), json={"name": "budget"})
    sync_client.portal.call(bus.drain)  # type: ignore[union-attr]
    trail = sync_client.get("/audit", headers=bearer(BOB)).json()
    assert [(row["action"], row["details"]["name"]) for row in trail] == [("tag.created", "budget")]


def test_background_task_through_testclient(sync_client: TestClient) -> None:
    response = sync_client.post("/lists/2/complete-all", headers=bearer(BOB))
    assert response.json() == {"list_id": 2, "open": 1}
    assert sync_client.get("/lists/2", headers=bearer(BOB)).json()["open_count"] == 0


def test_requests_without_lifespan() -> None:
    from reminders.main import app

    client = TestClient(app)  # not entered: no lifespan, no workers
    assert client.post("/reminders/1/notify", headers=bearer(ALICE)).status_code == 503
    assert client.get("/reminders/1", headers=bearer(ALICE)).json()["title"] == "Buy milk"
