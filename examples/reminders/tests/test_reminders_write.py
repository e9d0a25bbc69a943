"""Writing reminders: create, change, complete, delete, tags; the audit trail and events."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import ALICE, FIRST_NEW_ID, HOME, WORK, named
from httpx import AsyncClient
from reminders.events import bus
from reminders.models import Reminder, Tag, reminder_tags
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import sqlsandbox


async def count(session: AsyncSession, what: Any) -> int:
    return await session.scalar(select(func.count()).select_from(what)) or 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"title": "Call mum"},
            {"title": "Call mum", "notes": "", "priority": 0, "due_at": None, "tags": []},
        ),
        ({"title": "  Trim me  "}, {"title": "Trim me"}),
        (
            {"title": "Taxes", "notes": "Receipts in the blue folder"},
            {"notes": "Receipts in the blue folder"},
        ),
        ({"title": "Flight", "due_at": "2030-05-01T06:15:00Z"}, {"due_at": "2030-05-01T06:15:00Z"}),
        (
            {"title": "Flight", "due_at": "2030-05-01T08:15:00+02:00"},
            {"due_at": "2030-05-01T06:15:00Z"},
        ),
        ({"title": "Urgent", "priority": 3}, {"priority": 3}),
        ({"title": "Someday", "priority": 0}, {"priority": 0}),
        ({"title": "Tagged", "tags": ["errands"]}, {"tags": ["errands"]}),
        (
            {"title": "Tagged", "tags": ["Garden", "errands", "garden"]},
            {"tags": ["errands", "garden"]},
        ),
        ({"title": "x" * 200}, {"title": "x" * 200}),
    ],
)
async def test_create_a_reminder(
    client: AsyncClient,
    alice_headers: dict[str, str],
    body: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    response = await client.post(
        "/reminders", headers=alice_headers, json={"list_id": HOME, **body}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] >= FIRST_NEW_ID
    assert created["list_id"] == HOME
    assert created["completed"] is False
    assert {key: created[key] for key in expected} == expected
    again = (await client.get(f"/reminders/{created['id']}", headers=alice_headers)).json()
    assert again == created


async def test_created_reminders_are_in_the_database(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/reminders",
        headers=alice_headers,
        json={"list_id": HOME, "title": "Stored", "priority": 2},
    )
    stored = await async_db_session.get(Reminder, response.json()["id"])
    assert stored is not None
    assert (stored.title, stored.priority, stored.list_id, stored.notify_attempts) == (
        "Stored",
        2,
        HOME,
        0,
    )
    assert await count(async_db_session, Reminder) == 7


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "p", "priority": -1}, "priority"),
        ({"title": "p", "priority": 4}, "priority"),
        ({"title": "p", "priority": "high"}, "priority"),
        ({"title": "p", "due_at": "2030-01-01T09:00:00"}, "due_at"),
        ({"title": "p", "due_at": "next tuesday"}, "due_at"),
        ({"title": "p", "tags": ["Not Valid"]}, 0),
        ({"title": "p", "tags": [f"t{n}" for n in range(11)]}, "tags"),
        ({"title": "p", "notes": "n" * 2001}, "notes"),
    ],
)
async def test_invalid_reminders_are_refused(
    client: AsyncClient,
    async_db_session: AsyncSession,
    alice_headers: dict[str, str],
    body: dict[str, Any],
    field: str | int,
) -> None:
    response = await client.post(
        "/reminders", headers=alice_headers, json={"list_id": HOME, **body}
    )
    assert response.status_code == 422
    assert field in {error["loc"][-1] for error in response.json()["detail"]}
    assert await count(async_db_session, Reminder) == 6


async def test_a_list_is_required(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    response = await client.post("/reminders", headers=alice_headers, json={"title": "Nowhere"})
    assert response.status_code == 422


@pytest.mark.parametrize("list_id", [WORK, 999])
async def test_cannot_create_in_a_list_that_is_not_mine(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str], list_id: int
) -> None:
    response = await client.post(
        "/reminders", headers=alice_headers, json={"list_id": list_id, "title": "Sneaky"}
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "List not found"}
    assert await count(async_db_session, Reminder) == 6


async def test_new_tags_are_created_once_existing_ones_reused(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    for title in ("one", "two"):
        await client.post(
            "/reminders",
            headers=alice_headers,
            json={"list_id": HOME, "title": title, "tags": ["errands", "garden"]},
        )
    names = await async_db_session.scalars(
        select(Tag.name).where(Tag.owner_id == ALICE).order_by(Tag.name)
    )
    assert list(names) == ["errands", "garden", "health", "urgent"]
    assert await count(async_db_session, reminder_tags) == 6 + 4


# -- changing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"title": "Buy oat milk"}, {"title": "Buy oat milk"}),
        ({"notes": "Or soy"}, {"notes": "Or soy"}),
        ({"priority": 3}, {"priority": 3}),
        ({"due_at": "2031-01-01T00:00:00Z"}, {"due_at": "2031-01-01T00:00:00Z"}),
        ({"due_at": None}, {"due_at": None}),
        ({"title": "Both", "priority": 0}, {"title": "Both", "priority": 0}),
        ({}, {"title": "Buy milk", "priority": 1, "due_at": "2024-01-05T09:00:00Z"}),
    ],
)
async def test_change_a_reminder(
    client: AsyncClient,
    alice_headers: dict[str, str],
    change: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    response = await client.patch("/reminders/1", headers=alice_headers, json=change)
    assert response.status_code == 200
    assert {key: response.json()[key] for key in expected} == expected
    stored = (await client.get("/reminders/1", headers=alice_headers)).json()
    assert {key: stored[key] for key in expected} == expected
    assert stored["tags"] == ["errands"]


async def test_move_a_reminder_to_another_list(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    target = (await client.post("/lists", headers=alice_headers, json={"name": "Shopping"})).json()
    response = await client.patch(
        "/reminders/1", headers=alice_headers, json={"list_id": target["id"]}
    )
    assert response.json()["list_id"] == target["id"]
    lists = {
        item["name"]: item["reminder_count"]
        for item in (await client.get("/lists", headers=alice_headers)).json()
    }
    assert lists == {"Home": 3, "Shopping": 1}


async def test_cannot_move_a_reminder_into_someone_elses_list(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    response = await client.patch("/reminders/1", headers=alice_headers, json={"list_id": WORK})
    assert response.status_code == 404
    assert (await client.get("/reminders/1", headers=alice_headers)).json()["list_id"] == HOME


@pytest.mark.parametrize("method", ["patch", "delete"])
async def test_cannot_touch_someone_elses_reminder(
    client: AsyncClient, async_db_session: AsyncSession, bob_headers: dict[str, str], method: str
) -> None:
    kwargs: dict[str, Any] = {"json": {"title": "Mine"}} if method == "patch" else {}
    response = await getattr(client, method)("/reminders/1", headers=bob_headers, **kwargs)
    assert response.status_code == 404
    stored = await async_db_session.get(Reminder, 1)
    assert stored is not None and stored.title == "Buy milk"


@pytest.mark.parametrize("change", [{"title": ""}, {"priority": 7}, {"due_at": "2030-01-01"}])
async def test_invalid_changes_are_refused(
    client: AsyncClient, alice_headers: dict[str, str], change: dict[str, Any]
) -> None:
    assert (
        await client.patch("/reminders/1", headers=alice_headers, json=change)
    ).status_code == 422
    assert (await client.get("/reminders/1", headers=alice_headers)).json()["title"] == "Buy milk"


# -- completing --------------------------------------------------------------------------


@pytest.mark.parametrize("reminder_id", [1, 2, 4])
async def test_complete_an_open_reminder(
    client: AsyncClient, alice_headers: dict[str, str], reminder_id: int
) -> None:
    response = await client.post(f"/reminders/{reminder_id}/complete", headers=alice_headers)
    assert response.status_code == 200
    assert response.json()["completed"] is True
    assert response.json()["completed_at"] is not None


async def test_completing_twice_keeps_the_first_time(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    first = (await client.post("/reminders/1/complete", headers=alice_headers)).json()
    second = (await client.post("/reminders/1/complete", headers=alice_headers)).json()
    assert second["completed_at"] == first["completed_at"]


async def test_reopen_a_done_reminder(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    response = await client.post("/reminders/3/reopen", headers=alice_headers)
    assert (response.json()["completed"], response.json()["completed_at"]) == (False, None)
    page = (
        await client.get("/reminders", headers=alice_headers, params={"completed": "true"})
    ).json()
    assert page["items"] == []


async def test_reopening_an_open_reminder_changes_nothing(
    client: AsyncClient, alice_headers: dict[str, str], events: sqlsandbox.Probe
) -> None:
    response = await client.post("/reminders/1/reopen", headers=alice_headers)
    assert response.json()["completed"] is False
    await bus.drain()
    events.assert_nothing_received(named("reminder.reopened"))


@pytest.mark.parametrize("action", ["complete", "reopen"])
async def test_cannot_complete_someone_elses_reminder(
    client: AsyncClient, bob_headers: dict[str, str], action: str
) -> None:
    assert (await client.post(f"/reminders/3/{action}", headers=bob_headers)).status_code == 404


# -- deleting -------------------------------------------------------------------------------


async def test_delete_a_reminder(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    assert (await client.delete("/reminders/2", headers=alice_headers)).status_code == 204
    assert (await client.get("/reminders/2", headers=alice_headers)).status_code == 404
    assert (await client.delete("/reminders/2", headers=alice_headers)).status_code == 404
    # Its tag links went with it; the tags stay.
    links = await async_db_session.scalars(
        select(reminder_tags.c.tag_id).where(reminder_tags.c.reminder_id == 2)
    )
    assert list(links) == []
    assert await count(async_db_session, Tag) == 4


async def test_a_deleted_id_is_not_reused(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    first = (
        await client.post("/reminders", headers=alice_headers, json={"list_id": HOME, "title": "a"})
    ).json()
    await client.delete(f"/reminders/{first['id']}", headers=alice_headers)
    second = (
        await client.post("/reminders", headers=alice_headers, json={"list_id": HOME, "title": "b"})
    ).json()
    assert second["id"] > first["id"]
    assert (await client.get(f"/reminders/{first['id']}", headers=alice_headers)).status_code == 404


# -- tags on one reminder --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"), [("garden", ["garden"]), ("Garden", ["garden"]), ("errands", ["errands"])]
)
async def test_tag_a_reminder(
    client: AsyncClient, alice_headers: dict[str, str], name: str, expected: list[str]
) -> None:
    response = await client.put(f"/reminders/4/tags/{name}", headers=alice_headers)
    assert response.status_code == 200
    assert response.json()["tags"] == expected


async def test_tagging_twice_is_harmless(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    await client.put("/reminders/1/tags/errands", headers=alice_headers)
    response = await client.put("/reminders/1/tags/errands", headers=alice_headers)
    assert response.json()["tags"] == ["errands"]
    assert await count(async_db_session, reminder_tags) == 6


async def test_untag_a_reminder(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    assert (
        await client.delete("/reminders/2/tags/urgent", headers=alice_headers)
    ).status_code == 204
    assert (await client.get("/reminders/2", headers=alice_headers)).json()["tags"] == ["errands"]
    missing = await client.delete("/reminders/2/tags/urgent", headers=alice_headers)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Tag on this reminder not found"}


@pytest.mark.parametrize("name", ["Not Valid", "-dash", "under_score"])
async def test_bad_tag_names_are_refused(
    client: AsyncClient, alice_headers: dict[str, str], name: str
) -> None:
    assert (await client.put(f"/reminders/1/tags/{name}", headers=alice_headers)).status_code == 422


# -- what writes leave behind: events and the audit trail ---------------------------------------


async def test_writes_publish_events(
    client: AsyncClient, alice_headers: dict[str, str], events: sqlsandbox.Probe
) -> None:
    created = (
        await client.post("/reminders", headers=alice_headers, json={"list_id": HOME, "title": "E"})
    ).json()
    await client.patch(f"/reminders/{created['id']}", headers=alice_headers, json={"priority": 2})
    await client.post(f"/reminders/{created['id']}/complete", headers=alice_headers)
    await client.delete(f"/reminders/{created['id']}", headers=alice_headers)
    for name in ("reminder.created", "reminder.updated", "reminder.completed", "reminder.deleted"):
        event = await events.received(named(name), timeout=5)
        assert event.data["id"] == created["id"]
        assert event.actor_id == ALICE


@pytest.mark.parametrize(
    ("method", "path", "body", "action", "entity_id"),
    [
        (
            "post",
            "/reminders",
            {"list_id": HOME, "title": "Audited"},
            "reminder.created",
            None,  # the new reminder's id
        ),
        ("patch", "/reminders/1", {"title": "Audited"}, "reminder.updated", 1),
        ("post", "/reminders/1/complete", None, "reminder.completed", 1),
        ("post", "/reminders/3/reopen", None, "reminder.reopened", 3),
        ("delete", "/reminders/4", None, "reminder.deleted", 4),
        ("put", "/reminders/4/tags/garden", None, "tag.attached", 4),
        ("delete", "/reminders/2/tags/urgent", None, "tag.detached", 2),
    ],
)
async def test_writes_are_audited(
    client: AsyncClient,
    alice_headers: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    action: str,
    entity_id: int | None,
) -> None:
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    response = await getattr(client, method)(path, headers=alice_headers, **kwargs)
    assert response.status_code < 300
    entity_id = entity_id or response.json()["id"]
    await bus.drain()
    trail = (await client.get("/audit", headers=alice_headers)).json()
    assert [(row["action"], row["entity_id"], row["actor_id"]) for row in trail] == [
        (action, entity_id, ALICE)
    ]


async def test_reads_are_not_audited(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    await client.get("/reminders", headers=alice_headers)
    await client.get("/reminders/1", headers=alice_headers)
    await bus.drain()
    assert (await client.get("/audit", headers=alice_headers)).json() == []
