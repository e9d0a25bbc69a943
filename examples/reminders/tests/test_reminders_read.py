"""Reading reminders: the sample data by id, ownership, filters, sorting, pagination."""

from __future__ import annotations

import pytest
from helpers import ALICE, BOB, bearer, ids
from httpx import AsyncClient

SAMPLE = {
    1: {"title": "Buy milk", "priority": 1, "completed": False, "tags": ["errands"], "list_id": 1},
    2: {
        "title": "Pay rent!",
        "priority": 3,
        "completed": False,
        "tags": ["errands", "urgent"],
        "list_id": 1,
    },
    3: {
        "title": "Book dentist",
        "priority": 2,
        "completed": True,
        "tags": ["health"],
        "list_id": 1,
    },
    4: {"title": "Water the plants", "priority": 0, "completed": False, "tags": [], "list_id": 1},
    5: {
        "title": "Prepare quarterly report",
        "priority": 2,
        "completed": False,
        "tags": ["meetings"],
        "list_id": 2,
    },
    6: {
        "title": "Team retro notes",
        "priority": 0,
        "completed": True,
        "tags": ["meetings"],
        "list_id": 2,
    },
}
OWNER = {1: ALICE, 2: ALICE, 3: ALICE, 4: ALICE, 5: BOB, 6: BOB}


@pytest.mark.parametrize("reminder_id", sorted(SAMPLE))
async def test_get_a_sample_reminder_by_id(client: AsyncClient, reminder_id: int) -> None:
    response = await client.get(f"/reminders/{reminder_id}", headers=bearer(OWNER[reminder_id]))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == reminder_id
    assert {key: body[key] for key in SAMPLE[reminder_id]} == SAMPLE[reminder_id]
    assert body["notified_at"] is None


@pytest.mark.parametrize(
    ("user_id", "reminder_id"),
    [
        (ALICE, 5),
        (ALICE, 6),
        (BOB, 1),
        (BOB, 2),
        (BOB, 3),
        (BOB, 4),
        (ALICE, 999),
        (BOB, 0),
        (ALICE, -1),
    ],
)
async def test_reminders_of_others_do_not_exist_for_me(
    client: AsyncClient, user_id: int, reminder_id: int
) -> None:
    response = await client.get(f"/reminders/{reminder_id}", headers=bearer(user_id))
    assert response.status_code == 404
    assert response.json() == {"detail": "Reminder not found"}


async def test_a_reminder_id_must_be_a_number(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    assert (await client.get("/reminders/first", headers=alice_headers)).status_code == 422


@pytest.mark.parametrize("path", ["/reminders", "/reminders/1"])
async def test_reminders_need_a_token(client: AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 401


async def test_sample_due_dates_and_notes(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    body = (await client.get("/reminders/1", headers=alice_headers)).json()
    assert body["due_at"] == "2024-01-05T09:00:00Z"
    assert body["notes"] == "Two litres, oat"
    dentist = (await client.get("/reminders/3", headers=alice_headers)).json()
    assert dentist["completed_at"] == "2024-03-01T12:00:00Z"
    assert (await client.get("/reminders/4", headers=alice_headers)).json()["due_at"] is None


# -- pagination --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        (20, 0, [1, 2, 3, 4]),
        (2, 0, [1, 2]),
        (2, 2, [3, 4]),
        (2, 4, []),
        (1, 3, [4]),
        (3, 1, [2, 3, 4]),
        (100, 0, [1, 2, 3, 4]),
        (1, 0, [1]),
    ],
)
async def test_pages_of_my_reminders(
    client: AsyncClient, alice_headers: dict[str, str], limit: int, offset: int, expected: list[int]
) -> None:
    response = await client.get(
        "/reminders", headers=alice_headers, params={"limit": limit, "offset": offset}
    )
    page = response.json()
    assert ids(page) == expected
    assert (page["total"], page["limit"], page["offset"]) == (4, limit, offset)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": -1},
        {"offset": -1},
        {"limit": "ten"},
        {"offset": "x"},
    ],
)
async def test_bad_pagination_is_refused(
    client: AsyncClient, alice_headers: dict[str, str], params: dict[str, object]
) -> None:
    assert (await client.get("/reminders", headers=alice_headers, params=params)).status_code == 422


async def test_walking_every_page_sees_every_reminder_once(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    for n in range(11):
        await client.post(
            "/reminders", headers=alice_headers, json={"list_id": 1, "title": f"extra {n}"}
        )
    seen: list[int] = []
    offset = 0
    while True:
        page = (
            await client.get(
                "/reminders", headers=alice_headers, params={"limit": 4, "offset": offset}
            )
        ).json()
        if not page["items"]:
            break
        assert page["total"] == 15
        seen += ids(page)
        offset += 4
    assert seen == sorted(set(seen))
    assert len(seen) == 15


# -- filters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"completed": "true"}, [3]),
        ({"completed": "false"}, [1, 2, 4]),
        ({"tag": "errands"}, [1, 2]),
        ({"tag": "urgent"}, [2]),
        ({"tag": "health"}, [3]),
        ({"tag": "ERRANDS"}, [1, 2]),
        ({"tag": "meetings"}, []),
        ({"tag": "no-such-tag"}, []),
        ({"priority": 3}, [2]),
        ({"priority": 0}, [4]),
        ({"priority": 1}, [1]),
        ({"min_priority": 2}, [2, 3]),
        ({"min_priority": 0}, [1, 2, 3, 4]),
        ({"list_id": 1}, [1, 2, 3, 4]),
        ({"list_id": 2}, []),
        ({"overdue": "true"}, [1, 2]),
        ({"overdue": "false"}, [1, 2, 3, 4]),
        ({"due_before": "2025-01-01T00:00:00Z"}, [1, 2]),
        ({"due_before": "2024-01-31T00:00:00Z"}, [1]),
        ({"due_after": "2025-01-01T00:00:00Z"}, [3]),
        ({"due_after": "2024-01-06T00:00:00Z", "due_before": "2030-01-01T00:00:00Z"}, [2]),
        ({"completed": "false", "min_priority": 1}, [1, 2]),
        ({"tag": "errands", "priority": 3}, [2]),
        ({"overdue": "true", "tag": "urgent"}, [2]),
        ({"completed": "true", "tag": "errands"}, []),
    ],
)
async def test_filters_for_alice(
    client: AsyncClient,
    alice_headers: dict[str, str],
    params: dict[str, object],
    expected: list[int],
) -> None:
    page = (await client.get("/reminders", headers=alice_headers, params=params)).json()
    assert ids(page) == expected
    assert page["total"] == len(expected)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [5, 6]),
        ({"completed": "false"}, [5]),
        ({"tag": "meetings"}, [5, 6]),
        ({"tag": "errands"}, []),
        ({"overdue": "true"}, []),  # reminder 6 is past due but done
        ({"min_priority": 2}, [5]),
        ({"list_id": 1}, []),
    ],
)
async def test_filters_for_bob(
    client: AsyncClient, bob_headers: dict[str, str], params: dict[str, object], expected: list[int]
) -> None:
    assert (
        ids((await client.get("/reminders", headers=bob_headers, params=params)).json()) == expected
    )


@pytest.mark.parametrize(
    "params",
    [
        {"priority": 4},
        {"priority": -1},
        {"min_priority": 9},
        {"due_before": "soon"},
        {"sort": "owner"},
    ],
)
async def test_bad_filters_are_refused(
    client: AsyncClient, alice_headers: dict[str, str], params: dict[str, object]
) -> None:
    assert (await client.get("/reminders", headers=alice_headers, params=params)).status_code == 422


async def test_filters_see_new_tags(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    await client.put("/reminders/4/tags/garden", headers=alice_headers)
    await client.put("/reminders/1/tags/garden", headers=alice_headers)
    page = (await client.get("/reminders", headers=alice_headers, params={"tag": "garden"})).json()
    assert ids(page) == [1, 4]


# -- sorting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("id", [1, 2, 3, 4]),
        ("-id", [4, 3, 2, 1]),
        ("priority", [4, 1, 3, 2]),
        ("-priority", [2, 3, 1, 4]),
        ("title", [3, 1, 2, 4]),
        ("-title", [4, 2, 1, 3]),
        ("due_at", [1, 2, 3, 4]),  # no due date: last
        ("-due_at", [3, 2, 1, 4]),  # no due date: still last
    ],
)
async def test_sort_orders(
    client: AsyncClient, alice_headers: dict[str, str], sort: str, expected: list[int]
) -> None:
    page = (await client.get("/reminders", headers=alice_headers, params={"sort": sort})).json()
    assert ids(page) == expected


async def test_ties_are_broken_by_id(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    created = []
    for title in ("b", "a", "c"):
        response = await client.post(
            "/reminders", headers=alice_headers, json={"list_id": 1, "title": title, "priority": 3}
        )
        created.append(response.json()["id"])
    page = (
        await client.get(
            "/reminders", headers=alice_headers, params={"sort": "-priority", "limit": 4}
        )
    ).json()
    assert ids(page) == [2, *created]
