"""Reminder lists: counts, ownership, create, rename, delete, complete-all in the background."""

from __future__ import annotations

import pytest
from helpers import ALICE, BOB, FIRST_NEW_ID, HOME, WORK, bearer, named
from httpx import AsyncClient
from reminders.events import bus
from reminders.models import Reminder, ReminderList, Tag, User
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import sqlsandbox

HOME_JSON = {"id": HOME, "name": "Home", "color": "#34c759", "reminder_count": 4, "open_count": 3}
WORK_JSON = {"id": WORK, "name": "Work", "color": "#ff9500", "reminder_count": 2, "open_count": 1}


@pytest.mark.parametrize(("user_id", "expected"), [(ALICE, [HOME_JSON]), (BOB, [WORK_JSON])])
async def test_each_user_sees_only_their_lists(
    client: AsyncClient, user_id: int, expected: list[dict[str, object]]
) -> None:
    response = await client.get("/lists", headers=bearer(user_id))
    assert response.status_code == 200
    assert response.json() == expected


async def test_a_new_user_has_no_lists(client: AsyncClient, auth_headers: dict[str, str]) -> None:
    assert (await client.get("/lists", headers=auth_headers)).json() == []


@pytest.mark.parametrize(
    ("user_id", "list_id", "status"),
    [(ALICE, HOME, 200), (BOB, WORK, 200), (ALICE, WORK, 404), (BOB, HOME, 404), (ALICE, 999, 404)],
)
async def test_get_a_list_only_if_it_is_mine(
    client: AsyncClient, user_id: int, list_id: int, status: int
) -> None:
    response = await client.get(f"/lists/{list_id}", headers=bearer(user_id))
    assert response.status_code == status
    if status == 404:
        assert response.json() == {"detail": "List not found"}
    else:
        assert response.json()["id"] == list_id


async def test_lists_need_a_token(client: AsyncClient) -> None:
    assert (await client.get("/lists")).status_code == 401


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("Groceries", "Groceries"),
        ("Side projects", "Side projects"),
        ("Ünïcödé ☂", "Ünïcödé ☂"),
        ("  padded  ", "padded"),
        ("x" * 100, "x" * 100),
    ],
)
async def test_create_a_list(
    client: AsyncClient,
    async_db_session: AsyncSession,
    alice_headers: dict[str, str],
    name: str,
    stored: str,
) -> None:
    response = await client.post("/lists", headers=alice_headers, json={"name": name})
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": body["id"],
        "name": stored,
        "color": "#3478f6",
        "reminder_count": 0,
        "open_count": 0,
    }
    assert body["id"] >= FIRST_NEW_ID
    created = await async_db_session.get(ReminderList, body["id"])
    assert created is not None
    assert (created.owner_id, created.name) == (ALICE, stored)


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "Ok", "color": "red"},
        {"name": "Ok", "color": "#12345"},
        {"name": "Ok", "color": "#GGGGGG"},
        {},
    ],
)
async def test_invalid_lists_are_refused(
    client: AsyncClient,
    async_db_session: AsyncSession,
    alice_headers: dict[str, str],
    body: dict[str, str],
) -> None:
    response = await client.post("/lists", headers=alice_headers, json=body)
    assert response.status_code == 422
    assert await async_db_session.scalar(select(func.count()).select_from(ReminderList)) == 2


async def test_list_names_are_unique_per_owner(client: AsyncClient) -> None:
    mine = await client.post("/lists", headers=bearer(ALICE), json={"name": "Home"})
    assert mine.status_code == 409
    assert mine.json() == {"detail": "You already have a list named 'Home'"}
    # Bob has no "Home" list: the name is free for him.
    theirs = await client.post("/lists", headers=bearer(BOB), json={"name": "Home"})
    assert theirs.status_code == 201


@pytest.mark.parametrize("color", ["#000000", "#FFFFFF", "#abcdef", "#3478F6"])
async def test_recolour_a_list(
    client: AsyncClient, alice_headers: dict[str, str], color: str
) -> None:
    response = await client.patch(f"/lists/{HOME}", headers=alice_headers, json={"color": color})
    assert response.status_code == 200
    assert response.json() == {**HOME_JSON, "color": color}


async def test_rename_a_list(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    response = await client.patch(f"/lists/{HOME}", headers=alice_headers, json={"name": "House"})
    assert response.json()["name"] == "House"
    assert [
        item["name"] for item in (await client.get("/lists", headers=alice_headers)).json()
    ] == ["House"]


async def test_rename_onto_another_list_conflicts(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    await client.post("/lists", headers=alice_headers, json={"name": "Errands"})
    response = await client.patch(f"/lists/{HOME}", headers=alice_headers, json={"name": "Errands"})
    assert response.status_code == 409
    assert (await client.get(f"/lists/{HOME}", headers=alice_headers)).json()["name"] == "Home"


async def test_cannot_rename_someone_elses_list(
    client: AsyncClient, bob_headers: dict[str, str]
) -> None:
    response = await client.patch(f"/lists/{HOME}", headers=bob_headers, json={"name": "Mine now"})
    assert response.status_code == 404


async def test_delete_a_list_and_its_reminders(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    response = await client.delete(f"/lists/{HOME}", headers=alice_headers)
    assert response.status_code == 204
    assert (await client.get(f"/lists/{HOME}", headers=alice_headers)).status_code == 404
    left = await async_db_session.scalars(select(Reminder.id).order_by(Reminder.id))
    assert list(left) == [5, 6]
    # Tags belong to the user, not to the list: they stay.
    assert await async_db_session.scalar(select(func.count()).select_from(Tag)) == 4


async def test_cannot_delete_someone_elses_list(
    client: AsyncClient, async_db_session: AsyncSession, bob_headers: dict[str, str]
) -> None:
    assert (await client.delete(f"/lists/{HOME}", headers=bob_headers)).status_code == 404
    assert await async_db_session.get(ReminderList, HOME) is not None


@pytest.mark.parametrize("new_reminders", [0, 1, 3, 5])
async def test_counts_follow_new_reminders(
    client: AsyncClient, alice_headers: dict[str, str], new_reminders: int
) -> None:
    for n in range(new_reminders):
        await client.post(
            "/reminders", headers=alice_headers, json={"list_id": HOME, "title": f"r{n}"}
        )
    body = (await client.get(f"/lists/{HOME}", headers=alice_headers)).json()
    assert body["reminder_count"] == 4 + new_reminders
    assert body["open_count"] == 3 + new_reminders


async def test_counts_follow_completion(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    await client.post("/reminders/1/complete", headers=alice_headers)
    await client.post("/reminders/3/reopen", headers=alice_headers)
    body = (await client.get(f"/lists/{HOME}", headers=alice_headers)).json()
    assert (body["reminder_count"], body["open_count"]) == (4, 3)
    await client.post("/reminders/2/complete", headers=alice_headers)
    body = (await client.get(f"/lists/{HOME}", headers=alice_headers)).json()
    assert body["open_count"] == 2


async def test_deleting_a_user_deletes_their_lists(
    async_db_session: AsyncSession, client: AsyncClient
) -> None:
    bob = await async_db_session.get(User, BOB)
    assert bob is not None
    await async_db_session.delete(bob)
    await async_db_session.commit()
    assert await async_db_session.scalar(select(func.count()).select_from(ReminderList)) == 1
    assert (await client.get("/lists", headers=bearer(ALICE))).json() == [HOME_JSON]


# -- completing a whole list in a background task ----------------------------------


async def test_complete_all_runs_after_the_response(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    response = await client.post(f"/lists/{HOME}/complete-all", headers=alice_headers)
    assert response.status_code == 202
    assert response.json() == {"list_id": HOME, "open": 3}
    # Starlette runs background tasks before the ASGI call ends, so by now it is done.
    open_left = await async_db_session.scalar(
        select(func.count())
        .select_from(Reminder)
        .where(Reminder.list_id == HOME, Reminder.completed_at.is_(None))
    )
    assert open_left == 0
    assert (await client.get(f"/lists/{HOME}", headers=alice_headers)).json()["open_count"] == 0


async def test_complete_all_publishes_one_event_per_reminder(
    client: AsyncClient, alice_headers: dict[str, str], events: sqlsandbox.Probe
) -> None:
    await client.post(f"/lists/{HOME}/complete-all", headers=alice_headers)
    completed = [await events.received(named("reminder.completed"), timeout=5) for _ in range(3)]
    assert sorted(event.data["id"] for event in completed) == [1, 2, 4]
    assert all(event.actor_id == ALICE for event in completed)


async def test_complete_all_is_audited(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    await client.post(f"/lists/{HOME}/complete-all", headers=alice_headers)
    await bus.drain()
    trail = (await client.get("/audit?action=reminder.completed", headers=alice_headers)).json()
    assert sorted(row["entity_id"] for row in trail) == [1, 2, 4]


async def test_complete_all_on_a_finished_list_does_nothing(
    client: AsyncClient, alice_headers: dict[str, str], events: sqlsandbox.Probe
) -> None:
    await client.post(f"/lists/{HOME}/complete-all", headers=alice_headers)
    await bus.drain()
    events.clear()
    response = await client.post(f"/lists/{HOME}/complete-all", headers=alice_headers)
    assert response.json() == {"list_id": HOME, "open": 0}
    await bus.drain()
    events.assert_nothing_received(named("reminder.completed"))


async def test_complete_all_of_someone_elses_list_is_refused(
    client: AsyncClient, async_db_session: AsyncSession, bob_headers: dict[str, str]
) -> None:
    assert (
        await client.post(f"/lists/{HOME}/complete-all", headers=bob_headers)
    ).status_code == 404
    still_open = await async_db_session.scalar(
        select(func.count()).select_from(Reminder).where(Reminder.completed_at.is_(None))
    )
    assert still_open == 4
