"""Many requests at once, through one AsyncClient, as a busy client or a load test sends them."""

from __future__ import annotations

import asyncio

import pytest
from helpers import ALICE, BOB, HOME, WORK, bearer, ids, named
from httpx import AsyncClient
from reminders.events import bus
from reminders.models import Reminder, Tag, User
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

import sqlsandbox


@pytest.mark.parametrize("requests", [2, 5, 10])
async def test_concurrent_creates_all_land(
    client: AsyncClient,
    async_db_session: AsyncSession,
    alice_headers: dict[str, str],
    requests: int,
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(
                "/reminders", headers=alice_headers, json={"list_id": HOME, "title": f"c{n}"}
            )
            for n in range(requests)
        )
    )
    assert [r.status_code for r in responses] == [201] * requests
    new_ids = [r.json()["id"] for r in responses]
    assert len(set(new_ids)) == requests
    assert await async_db_session.scalar(select(func.count()).select_from(Reminder)) == 6 + requests
    page = (await client.get("/reminders", headers=alice_headers, params={"limit": 100})).json()
    assert page["total"] == 4 + requests


async def test_ten_concurrent_reads(client: AsyncClient) -> None:
    owners = {1: ALICE, 2: ALICE, 3: ALICE, 4: ALICE, 5: BOB, 6: BOB}
    responses = await asyncio.gather(
        *(
            client.get(f"/reminders/{n % 6 + 1}", headers=bearer(owners[n % 6 + 1]))
            for n in range(10)
        )
    )
    assert [r.json()["id"] for r in responses] == [n % 6 + 1 for n in range(10)]


async def test_ten_concurrent_completions_complete_once(
    client: AsyncClient, alice_headers: dict[str, str], events: sqlsandbox.Probe
) -> None:
    responses = await asyncio.gather(
        *(client.post("/reminders/1/complete", headers=alice_headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["completed_at"] for r in responses}) == 1
    await bus.drain()
    assert events.count(named("reminder.completed")) == 1


async def test_ten_concurrent_creates_share_one_new_tag(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(
                "/reminders",
                headers=alice_headers,
                json={"list_id": HOME, "title": f"t{n}", "tags": ["shared"]},
            )
            for n in range(10)
        )
    )
    assert {r.status_code for r in responses} == {201}
    tags = await async_db_session.scalars(select(Tag.id).where(Tag.name == "shared"))
    assert len(list(tags)) == 1
    tagged = (
        await client.get("/reminders", headers=alice_headers, params={"tag": "shared"})
    ).json()
    assert tagged["total"] == 10


async def test_ten_concurrent_signups_with_one_email(
    client: AsyncClient, async_db_session: AsyncSession
) -> None:
    body = {"email": "race@example.com", "password": "s3cret-pass", "name": "Racer"}
    responses = await asyncio.gather(*(client.post("/auth/register", json=body) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9
    count = await async_db_session.scalar(
        select(func.count()).select_from(User).where(User.email == "race@example.com")
    )
    assert count == 1


@pytest.mark.parametrize("same_name", [True, False])
async def test_ten_concurrent_list_creations(
    client: AsyncClient, bob_headers: dict[str, str], same_name: bool
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/lists", headers=bob_headers, json={"name": "Q" if same_name else f"Q{n}"})
            for n in range(10)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == ([201] + [409] * 9 if same_name else [201] * 10)
    lists = (await client.get("/lists", headers=bob_headers)).json()
    assert len(lists) == (2 if same_name else 11)


async def test_two_users_writing_at_once_stay_apart(client: AsyncClient) -> None:
    alice, bob = bearer(ALICE), bearer(BOB)
    await asyncio.gather(
        *(
            client.post(
                "/reminders",
                headers=alice if n % 2 else bob,
                json={"list_id": HOME if n % 2 else WORK, "title": f"x{n}"},
            )
            for n in range(10)
        )
    )
    mine = (await client.get("/reminders", headers=alice, params={"q": "x"})).json()
    theirs = (await client.get("/reminders", headers=bob, params={"q": "x"})).json()
    assert (mine["total"], theirs["total"]) == (5, 5)
    assert not set(ids(mine)) & set(ids(theirs))


async def test_reads_and_writes_interleaved(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    calls = []
    for n in range(5):
        calls.append(
            client.post(
                "/reminders", headers=alice_headers, json={"list_id": HOME, "title": f"w{n}"}
            )
        )
        calls.append(client.get("/reminders", headers=alice_headers, params={"limit": 100}))
    responses = await asyncio.gather(*calls)
    totals = [r.json()["total"] for r in responses[1::2]]
    # Every read sees the sample data and never more than everything.
    assert all(4 <= total <= 9 for total in totals)
    final = (await client.get("/reminders", headers=alice_headers, params={"limit": 100})).json()
    assert final["total"] == 9


async def test_concurrent_tagging_of_one_reminder(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    names = [f"tag-{n}" for n in range(10)]
    responses = await asyncio.gather(
        *(client.put(f"/reminders/4/tags/{name}", headers=alice_headers) for name in names)
    )
    assert {r.status_code for r in responses} == {200}
    assert (await client.get("/reminders/4", headers=alice_headers)).json()["tags"] == sorted(names)


async def test_a_task_group_of_requests(client: AsyncClient, bob_headers: dict[str, str]) -> None:
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(client.post("/tags", headers=bob_headers, json={"name": f"g{n}"}))
            for n in range(10)
        ]
    assert [t.result().status_code for t in tasks] == [201] * 10
    assert len((await client.get("/tags", headers=bob_headers)).json()) == 11
