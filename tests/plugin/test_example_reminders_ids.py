"""The reminders app's first insert gets the same id in every test (asyncpg and psycopg).

examples/reminders uses async SQLAlchemy on asyncpg for its API and psycopg
for reports, with sample data whose seed moves every sequence to 101. Rows
are rolled back after each test, sequences are not: sqlsandbox restores them
at checkin, so hard-coded ids hold in every test, in any order, on every
xdist worker. The app, its migrations and its ``[tool.sqlsandbox]`` are
copied unchanged into a scratch project; only the test module is new. Set
``SQLSANDBOX_TEST_POSTGRES_URL`` to the embedded server's URL (``sqlsandbox
server start``) to run this against a server built without libxml, where the
restore takes its unguarded form.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reminders"

TEST_IDS = """
import pytest
from httpx import ASGITransport, AsyncClient
from reminders.db import SessionLocal, SyncSessionLocal
from reminders.main import app, lifespan
from reminders.models import Reminder, ReminderList, Tag
from reminders.security import create_access_token

FIRST_NEW_ID = 101  # reminders/seed.py moves every sequence past the sample ids


@pytest.mark.parametrize("n", range(4))
async def test_asyncpg_session(n):
    async with SessionLocal() as session:
        rows = [
            ReminderList(owner_id=1, name=f"list {n}"),
            Tag(owner_id=1, name=f"tag{n}"),
            Reminder(list_id=1, title=f"reminder {n}"),
        ]
        session.add_all(rows)
        await session.commit()
    assert [row.id for row in rows] == [FIRST_NEW_ID] * 3


@pytest.mark.parametrize("n", range(3))
async def test_api(n):
    headers = {"Authorization": f"Bearer {create_access_token(1)}"}
    async with lifespan(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/lists", headers=headers, json={"name": f"api {n}"})
    assert response.status_code == 201, response.text
    assert response.json()["id"] == FIRST_NEW_ID


@pytest.mark.parametrize("n", range(3))
def test_psycopg_session(n):
    with SyncSessionLocal() as session:
        tag = Tag(owner_id=2, name=f"sync{n}")
        session.add(tag)
        session.commit()
    assert tag.id == FIRST_NEW_ID
"""

ORDERS = [
    pytest.param([], id="serial"),
    pytest.param(["-n", "2"], id="xdist"),
    pytest.param(["-p", "random_order", "--random-order"], id="random-order"),
]


@pytest.mark.parametrize("args", ORDERS)
def test_first_insert_gets_the_same_id_in_every_test(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    postgres_admin_url: DatabaseURL,
    inner_registry: str,
    args: list[str],
) -> None:
    for name in ("reminders", "migrations"):
        shutil.copytree(
            EXAMPLE / name, pytester.path / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("alembic.ini", "pyproject.toml"):
        shutil.copy(EXAMPLE / name, pytester.path / name)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_ids.py").write_text(TEST_IDS)
    monkeypatch.setenv("SQLSANDBOX_URL", postgres_admin_url.render())
    monkeypatch.setenv("SQLSANDBOX_REGISTRY_DATABASE", inner_registry)
    monkeypatch.setenv("PASSWORD_ITERATIONS", "1000")
    for name in ("DATABASE_URL", "SYNC_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=10)
