"""Search (``q``): titles and notes, case-insensitive, combined with filters, paginated."""

from __future__ import annotations

import pytest
from helpers import ALICE, BOB, bearer, ids
from httpx import AsyncClient
from reminders.models import Reminder
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("milk", [1]),
        ("MILK", [1]),
        ("Milk", [1]),
        ("rent", [2]),
        ("oat", [1]),  # in the notes
        ("check-up", [3]),
        ("the", [4]),
        ("b", [1, 3, 4]),
        ("k", [1, 3, 4]),
        ("an", [4]),
        ("!", [2]),
        ("%", []),  # LIKE wildcards are searched for literally
        ("_", []),
        ("report", []),  # Bob's
        ("nothing like this", []),
        ("  milk  ", [1]),
    ],
)
async def test_search_alice(
    client: AsyncClient, alice_headers: dict[str, str], q: str, expected: list[int]
) -> None:
    page = (await client.get("/reminders", headers=alice_headers, params={"q": q})).json()
    assert ids(page) == expected
    assert page["total"] == len(expected)


@pytest.mark.parametrize(
    ("q", "expected"),
    [("report", [5]), ("team", [6]), ("finance", [5]), ("e", [5, 6]), ("milk", [])],
)
async def test_search_bob(
    client: AsyncClient, bob_headers: dict[str, str], q: str, expected: list[int]
) -> None:
    assert (
        ids((await client.get("/reminders", headers=bob_headers, params={"q": q})).json())
        == expected
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "b", "completed": "false"}, [1, 4]),
        ({"q": "b", "tag": "health"}, [3]),
        ({"q": "b", "sort": "-id"}, [4, 3, 1]),
        ({"q": "b", "limit": 2}, [1, 3]),
        ({"q": "b", "limit": 2, "offset": 2}, [4]),
        ({"q": "a", "min_priority": 3}, [2]),
        ({"q": "k", "overdue": "true"}, [1]),
    ],
)
async def test_search_with_filters(
    client: AsyncClient,
    alice_headers: dict[str, str],
    params: dict[str, object],
    expected: list[int],
) -> None:
    assert (
        ids((await client.get("/reminders", headers=alice_headers, params=params)).json())
        == expected
    )


async def test_search_query_length_is_limited(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    response = await client.get("/reminders", headers=alice_headers, params={"q": "x" * 101})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "title",
    ["Call the plumber", "plumber: fix the sink", "Ask about PLUMBER rates", "Plumbers' union"],
)
async def test_search_finds_a_new_reminder(
    client: AsyncClient, alice_headers: dict[str, str], title: str
) -> None:
    created = await client.post(
        "/reminders", headers=alice_headers, json={"list_id": 1, "title": title}
    )
    page = (await client.get("/reminders", headers=alice_headers, params={"q": "plumber"})).json()
    assert ids(page) == [created.json()["id"]]


async def test_search_pages_through_many_matches(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    async_db_session.add_all(Reminder(list_id=1, title=f"invoice #{n:02}") for n in range(25))
    await async_db_session.commit()
    pages = []
    for offset in (0, 10, 20, 30):
        page = (
            await client.get(
                "/reminders",
                headers=alice_headers,
                params={"q": "invoice", "limit": 10, "offset": offset, "sort": "title"},
            )
        ).json()
        assert page["total"] == 25
        pages.append(len(page["items"]))
    assert pages == [10, 10, 5, 0]


async def test_search_never_shows_another_users_reminders(
    client: AsyncClient, async_db_session: AsyncSession, test_user_token: str
) -> None:
    mine = {"Authorization": f"Bearer {test_user_token}"}
    created_list = await client.post("/lists", headers=mine, json={"name": "Mine"})
    await client.post(
        "/reminders", headers=mine, json={"list_id": created_list.json()["id"], "title": "Buy milk"}
    )
    assert ids(
        (await client.get("/reminders", headers=bearer(ALICE), params={"q": "milk"})).json()
    ) == [1]
    assert (
        ids((await client.get("/reminders", headers=bearer(BOB), params={"q": "milk"})).json())
        == []
    )
    mine_page = (await client.get("/reminders", headers=mine, params={"q": "milk"})).json()
    assert [item["title"] for item in mine_page["items"]] == ["Buy milk"]


def test_search_in_the_sample_data_with_a_sync_session(db_session: Session) -> None:
    # The same search the API does, in plain SQLAlchemy on the sync engine's driver.
    found = db_session.query(Reminder.id).filter(Reminder.title.ilike("%b%")).order_by(Reminder.id)
    assert [row.id for row in found] == [1, 3]
