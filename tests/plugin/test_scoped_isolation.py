"""Tests inside a data-writing scope stay isolated from each other; open sessions end.

Two things a suite notices, end to end through pytester, on sync SQLAlchemy
(psycopg) and async SQLAlchemy (asyncpg):

- In a module (or class) whose fixture wrote a row, every test sees that
  row and none of the rows the other tests wrote, gets the same id for its
  own first insert, and finds no advisory lock or prepared statement of the
  test before it; after a class scope ends, its row is gone too.
- A Session or AsyncSession a test leaves in a transaction (in a global)
  does not carry the ended test's connection into the next test: its next
  use starts clean on the next test's connection, inside a data-writing
  scope too.

Every inner test is written to pass in any order and on any xdist worker.
"""

from __future__ import annotations

import pytest

from sqlsandbox._urls import DatabaseURL

from .conftest import MakeProject

APP = """
import os

from sqlalchemy import String, create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

engine = create_engine(os.environ["DATABASE_URL"])
async_engine = create_async_engine(os.environ["ASYNC_DATABASE_URL"])


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
"""

CONFIG = """
migrate = "metadata:app:Base.metadata"
url_env = ["DATABASE_URL", "ASYNC_DATABASE_URL"]
engines = ["app:engine", "app:async_engine"]
"""

# What a test finds of the tests before it on its connection, besides rows.
LEFTOVERS = (
    "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND pid = pg_backend_pid()) + (SELECT count(*) FROM pg_prepared_statements "
    "WHERE from_sql AND name NOT LIKE 'sqlsandbox%')"
)

TEST_SYNC_SCOPE = f"""
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import Item, engine


def insert(name):
    with Session(engine) as session:
        item = Item(name=name)
        session.add(item)
        session.commit()
        return item.id


def names():
    with Session(engine) as session:
        return sorted(session.scalars(select(Item.name)))


def leave_session_state():
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(4242)"))
        conn.execute(text("PREPARE leftover AS SELECT 1"))
        conn.commit()


def leftovers():
    with engine.connect() as conn:
        return conn.scalar(text("{LEFTOVERS}"))


@pytest.fixture(scope="module")
def scope_id():
    return insert("scope")


@pytest.mark.parametrize("n", range(3))
def test_module_tests_see_the_scope_row_only(scope_id, n):
    assert names() == ["scope"]
    assert leftovers() == 0
    assert insert(f"test{{n}}") == scope_id + 1
    leave_session_state()
    assert names() == ["scope", f"test{{n}}"]


@pytest.fixture(scope="class")
def class_id(scope_id):
    return insert("class")


class TestClassScope:
    @pytest.mark.parametrize("n", range(2))
    def test_class_tests_see_both_scope_rows(self, class_id, scope_id, n):
        assert names() == ["class", "scope"]
        assert leftovers() == 0
        assert insert(f"class-test{{n}}") == class_id + 1
        leave_session_state()


def test_after_the_class_its_row_is_gone(scope_id):
    assert names() == ["scope"]
    assert insert("after") == scope_id + 1
"""

TEST_ASYNC_SCOPE = f"""
import pytest
import pytest_asyncio
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app import Item, async_engine

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def insert(name):
    async with AsyncSession(async_engine) as session:
        item = Item(name=name)
        session.add(item)
        await session.flush()
        new_id = item.id
        await session.commit()
        return new_id


async def names():
    async with AsyncSession(async_engine) as session:
        return sorted(await session.scalars(select(Item.name)))


async def leave_session_state():
    async with async_engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(4242)"))
        await conn.execute(text("PREPARE leftover AS SELECT 1"))
        await conn.commit()


async def leftovers():
    async with async_engine.connect() as conn:
        return await conn.scalar(text("{LEFTOVERS}"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scope_id():
    return await insert("scope")


@pytest.mark.parametrize("n", range(3))
async def test_module_tests_see_the_scope_row_only(scope_id, n):
    assert await names() == ["scope"]
    assert await leftovers() == 0
    assert await insert(f"test{{n}}") == scope_id + 1
    await leave_session_state()
    assert await names() == ["scope", f"test{{n}}"]
"""

ORDERS = [
    pytest.param([], id="serial"),
    pytest.param(["-n", "2"], id="xdist"),
    pytest.param(["-p", "random_order", "--random-order"], id="random-order"),
    pytest.param(["-n", "2", "-p", "random_order", "--random-order"], id="xdist-random"),
]


# The app's own settings for inner runs (see server_env in conftest.py).
APP_ENV = {
    "DATABASE_URL": "postgresql+psycopg://app:secret@prod.invalid/app",
    "ASYNC_DATABASE_URL": "postgresql+asyncpg://app:secret@prod.invalid/app",
}


@pytest.mark.parametrize("args", ORDERS)
def test_tests_inside_a_data_scope_do_not_see_each_other(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL, args: list[str]
) -> None:
    make_project(
        CONFIG, app=APP, test_sync_scope=TEST_SYNC_SCOPE, test_async_scope=TEST_ASYNC_SCOPE
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", *args)
    result.assert_outcomes(passed=9)


TEST_LEFT_OPEN = """
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app import Item, async_engine, engine

# Kept across tests, as an app object or a careless global would.
LEFT = {}


@pytest.mark.parametrize("n", range(3))
def test_session(n):
    session = LEFT.setdefault("session", Session(engine))
    assert sorted(session.scalars(select(Item.name))) == []
    session.add(Item(name=f"session{n}"))
    session.flush()                                   # left in a transaction


@pytest.mark.parametrize("n", range(3))
async def test_async_session(n):
    # Each test runs on an event loop of its own: the session follows.
    session = LEFT.setdefault("async_session", AsyncSession(async_engine))
    assert sorted(await session.scalars(select(Item.name))) == []
    session.add(Item(name=f"async{n}"))
    await session.flush()
"""

TEST_LEFT_OPEN_IN_SCOPE = """
import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import Item, async_engine

LEFT = {}
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def scope_row():
    async with AsyncSession(async_engine) as session:
        session.add(Item(name="scope"))
        await session.commit()


@pytest.mark.parametrize("n", range(3))
async def test_async_session_in_scope(n):
    session = LEFT.setdefault("session", AsyncSession(async_engine))
    assert sorted(await session.scalars(select(Item.name))) == ["scope"]
    session.add(Item(name=f"session{n}"))
    await session.flush()
"""


@pytest.mark.parametrize("args", ORDERS[:2])
def test_sessions_left_open_do_not_reach_the_next_test(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL, args: list[str]
) -> None:
    make_project(
        CONFIG,
        app=APP,
        test_left_open=TEST_LEFT_OPEN,
        test_left_open_in_scope=TEST_LEFT_OPEN_IN_SCOPE,
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-o", "asyncio_mode=auto", *args)
    result.assert_outcomes(passed=9)
    assert "OwnershipError" not in result.stdout.str()
