"""Tags: listing with counts, create, rename, delete."""

from __future__ import annotations

import pytest
from helpers import ALICE, BOB, FIRST_NEW_ID, bearer
from httpx import AsyncClient
from reminders.models import Tag, reminder_tags
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

ALICE_TAGS = [
    {"id": 1, "name": "errands", "reminder_count": 2},
    {"id": 2, "name": "health", "reminder_count": 1},
    {"id": 3, "name": "urgent", "reminder_count": 1},
]
BOB_TAGS = [{"id": 4, "name": "meetings", "reminder_count": 2}]


@pytest.mark.parametrize(("user_id", "expected"), [(ALICE, ALICE_TAGS), (BOB, BOB_TAGS)])
async def test_sample_tags_with_counts(
    client: AsyncClient, user_id: int, expected: list[dict[str, object]]
) -> None:
    assert (await client.get("/tags", headers=bearer(user_id))).json() == expected


async def test_a_new_user_has_no_tags(client: AsyncClient, auth_headers: dict[str, str]) -> None:
    assert (await client.get("/tags", headers=auth_headers)).json() == []


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("home", "home"),
        ("work-stuff", "work-stuff"),
        ("2025", "2025"),
        ("a", "a"),
        ("Upper", "upper"),
        (" spaced ", "spaced"),
    ],
)
async def test_create_a_tag(
    client: AsyncClient, alice_headers: dict[str, str], name: str, stored: str
) -> None:
    response = await client.post("/tags", headers=alice_headers, json={"name": name})
    assert response.status_code == 201
    assert response.json() == {"id": response.json()["id"], "name": stored, "reminder_count": 0}
    assert response.json()["id"] >= FIRST_NEW_ID
    names = [tag["name"] for tag in (await client.get("/tags", headers=alice_headers)).json()]
    assert names == sorted(["errands", "health", "urgent", stored])


@pytest.mark.parametrize(
    "name", ["", "with space", "-leading", "emoji🙂", "x" * 51, "under_score", "dot.ted"]
)
async def test_invalid_tag_names_are_refused(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str], name: str
) -> None:
    assert (
        await client.post("/tags", headers=alice_headers, json={"name": name})
    ).status_code == 422
    assert await async_db_session.scalar(select(func.count()).select_from(Tag)) == 4


async def test_tag_names_are_unique_per_user(client: AsyncClient) -> None:
    mine = await client.post("/tags", headers=bearer(ALICE), json={"name": "errands"})
    assert mine.status_code == 409
    assert mine.json() == {"detail": "You already have a tag named 'errands'"}
    assert (
        await client.post("/tags", headers=bearer(BOB), json={"name": "errands"})
    ).status_code == 201


async def test_rename_a_tag_renames_it_everywhere(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    response = await client.patch("/tags/1", headers=alice_headers, json={"name": "shopping"})
    assert response.json() == {"id": 1, "name": "shopping", "reminder_count": 2}
    assert (await client.get("/reminders/1", headers=alice_headers)).json()["tags"] == ["shopping"]
    assert (await client.get("/reminders/2", headers=alice_headers)).json()["tags"] == [
        "shopping",
        "urgent",
    ]


async def test_rename_onto_an_existing_tag_conflicts(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    assert (
        await client.patch("/tags/1", headers=alice_headers, json={"name": "health"})
    ).status_code == 409
    assert [t["name"] for t in (await client.get("/tags", headers=alice_headers)).json()] == [
        "errands",
        "health",
        "urgent",
    ]


@pytest.mark.parametrize(
    ("method", "tag_id"), [("patch", 4), ("delete", 4), ("patch", 999), ("delete", 999)]
)
async def test_cannot_touch_tags_that_are_not_mine(
    client: AsyncClient, alice_headers: dict[str, str], method: str, tag_id: int
) -> None:
    kwargs = {"json": {"name": "stolen"}} if method == "patch" else {}
    response = await getattr(client, method)(f"/tags/{tag_id}", headers=alice_headers, **kwargs)
    assert response.status_code == 404
    assert response.json() == {"detail": "Tag not found"}
    assert (await client.get("/tags", headers=bearer(BOB))).json() == BOB_TAGS


async def test_delete_a_tag_untags_its_reminders(
    client: AsyncClient, async_db_session: AsyncSession, alice_headers: dict[str, str]
) -> None:
    assert (await client.delete("/tags/1", headers=alice_headers)).status_code == 204
    assert (await client.get("/reminders/1", headers=alice_headers)).json()["tags"] == []
    assert (await client.get("/reminders/2", headers=alice_headers)).json()["tags"] == ["urgent"]
    assert await async_db_session.scalar(select(func.count()).select_from(reminder_tags)) == 4


@pytest.mark.parametrize("extra", [1, 2, 5])
async def test_counts_follow_tagging(
    client: AsyncClient, alice_headers: dict[str, str], extra: int
) -> None:
    for n in range(extra):
        created = (
            await client.post(
                "/reminders", headers=alice_headers, json={"list_id": 1, "title": f"t{n}"}
            )
        ).json()
        await client.put(f"/reminders/{created['id']}/tags/health", headers=alice_headers)
    counts = {
        t["name"]: t["reminder_count"]
        for t in (await client.get("/tags", headers=alice_headers)).json()
    }
    assert counts == {"errands": 2, "health": 1 + extra, "urgent": 1}


async def test_tags_are_created_on_the_fly_by_reminders(
    client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    await client.post(
        "/reminders", headers=alice_headers, json={"list_id": 1, "title": "x", "tags": ["new-one"]}
    )
    tags = (await client.get("/tags", headers=alice_headers)).json()
    assert [(t["name"], t["reminder_count"]) for t in tags if t["id"] >= FIRST_NEW_ID] == [
        ("new-one", 1)
    ]
