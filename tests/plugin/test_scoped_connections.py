"""A SQLAlchemy Core Connection kept across tests follows the test that uses it.

End to end through pytester, on sync SQLAlchemy (psycopg) and async
SQLAlchemy (asyncpg): a ``Connection`` opened once (a module global, a
module-scoped fixture) and used by test after test runs each test's
statements on that test's connection, so no test sees another's rows. A
transaction a test left open on it was rolled back when that test ended: the
next use says so (an OwnershipError naming the test) until the app rolls
back, as after any transaction the server aborted.

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

TEST_SYNC = """
import pytest
from sqlalchemy import func, insert, select

from app import Item, engine
from sqlsandbox import OwnershipError

COUNT = select(func.count()).select_from(Item)

# Kept across tests, as an app object or a careless global would.
LEFT = {}


@pytest.fixture(scope="module")
def module_conn():
    with engine.connect() as conn:
        yield conn


@pytest.mark.parametrize("n", range(3))
def test_committed_each_test(n):
    conn = LEFT.setdefault("conn", engine.connect())
    assert conn.scalar(COUNT) == 0
    conn.execute(insert(Item).values(name=f"conn{n}"))
    conn.commit()
    assert conn.scalar(COUNT) == 1
    conn.commit()


@pytest.mark.parametrize("n", range(3))
def test_module_fixture(module_conn, n):
    assert module_conn.scalar(COUNT) == 0
    module_conn.execute(insert(Item).values(name=f"fixture{n}"))
    assert module_conn.scalar(COUNT) == 1
    module_conn.commit()                              # committed: still gone next test


@pytest.mark.parametrize("n", range(3))
def test_left_in_a_transaction(n):
    conn = LEFT.get("open")
    if conn is None:
        conn = LEFT["open"] = engine.connect()
        trans = LEFT["trans"] = conn.begin()
    else:
        with pytest.raises(OwnershipError, match=r"test_left_in_a_transaction.*ended"):
            conn.scalar(COUNT)
        LEFT["trans"].rollback()                      # the old test's transaction
        assert not LEFT["trans"].is_active
        trans = LEFT["trans"] = conn.begin()
    assert conn.scalar(COUNT) == 0
    conn.execute(insert(Item).values(name=f"open{n}"))
    assert trans.is_active                            # left open
"""

TEST_ASYNC = """
import pytest
from sqlalchemy import func, insert, select

from app import Item, async_engine
from sqlsandbox import OwnershipError

COUNT = select(func.count()).select_from(Item)
LEFT = {}
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.parametrize("n", range(3))
async def test_async_committed_each_test(n):
    conn = LEFT.get("conn")
    if conn is None:
        conn = LEFT["conn"] = await async_engine.connect()
    assert await conn.scalar(COUNT) == 0
    await conn.execute(insert(Item).values(name=f"conn{n}"))
    await conn.commit()
    assert await conn.scalar(COUNT) == 1
    await conn.commit()


@pytest.mark.parametrize("n", range(3))
async def test_async_left_in_a_transaction(n):
    conn = LEFT.get("open")
    if conn is None:
        conn = LEFT["open"] = await async_engine.connect()
    else:
        with pytest.raises(OwnershipError, match=r"test_async_left_in_a_transaction.*ended"):
            await conn.scalar(COUNT)
        await conn.rollback()
    assert await conn.scalar(COUNT) == 0
    await conn.execute(insert(Item).values(name=f"open{n}"))   # left in a transaction
"""

ORDERS = [
    pytest.param([], id="serial"),
    pytest.param(["-n", "2"], id="xdist"),
]


# The app's own settings for inner runs (see server_env in conftest.py).
APP_ENV = {
    "DATABASE_URL": "postgresql+psycopg://app:secret@prod.invalid/app",
    "ASYNC_DATABASE_URL": "postgresql+asyncpg://app:secret@prod.invalid/app",
}


@pytest.mark.parametrize("args", ORDERS)
def test_connections_kept_across_tests_follow_the_test(
    pytester: pytest.Pytester, make_project: MakeProject, server_env: DatabaseURL, args: list[str]
) -> None:
    make_project(CONFIG, app=APP, test_sync=TEST_SYNC, test_async=TEST_ASYNC)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-o", "asyncio_mode=auto", *args)
    result.assert_outcomes(passed=15)
