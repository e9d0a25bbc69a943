"""An asyncio SQLAlchemy engine the app built itself, routed through the sandbox."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import String, create_engine, insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlsandbox import OwnershipError, Sandbox
from sqlsandbox.sqlalchemy import install

from .conftest import (
    ASYNC_SCHEMES,
    BACKEND_OF,
    Routed,
    async_params,
    count_sql,
    items,
    names_sql,
)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


@pytest.mark.asyncio
async def test_async_session_commits_are_rolled_back_at_checkin(arouted: Routed, tag: str) -> None:
    engine = arouted.engine
    async with await arouted.sandbox.acheckout(name="test_async_orm"):
        async with AsyncSession(engine) as session:
            session.add(Item(name=tag + "a"))
            await session.commit()
            nested = await session.begin_nested()
            session.add(Item(name=tag + "nested"))
            await session.flush()
            await nested.rollback()
            session.add(Item(name=tag + "b"))
            await session.commit()
        async with engine.begin() as conn:
            await conn.execute(insert(items).values(name=tag + "core"))
        async with AsyncSession(engine) as session:
            assert list(await session.scalars(names_sql(tag))) == [
                tag + "a",
                tag + "b",
                tag + "core",
            ]
        assert arouted.committed(tag) == []
    assert arouted.committed(tag) == []


@pytest.mark.asyncio
async def test_integrity_error_then_continue(arouted: Routed, tag: str) -> None:
    async with await arouted.sandbox.acheckout(), AsyncSession(arouted.engine) as session:
        session.add(Item(name=tag + "dup"))
        await session.commit()
        session.add(Item(name=tag + "dup"))
        with pytest.raises(IntegrityError):
            await session.commit()
        await session.rollback()
        session.add(Item(name=tag + "ok"))
        await session.commit()
        assert await session.scalar(count_sql(tag)) == 2


@pytest.mark.asyncio
async def test_many_tasks_share_the_owner_connection(arouted: Routed, tag: str) -> None:
    engine = arouted.engine

    async def worker(i: int) -> None:
        async with AsyncSession(engine) as session:
            for j in range(3):
                session.add(Item(name=f"{tag}{i:02d}_{j}"))
                await session.commit()
            await session.scalar(count_sql(tag))

    async with await arouted.sandbox.acheckout():
        await asyncio.gather(*(worker(i) for i in range(20)))
        async with AsyncSession(engine) as session:
            assert await session.scalar(count_sql(tag)) == 60
    assert arouted.committed(tag) == []


@pytest.mark.asyncio
async def test_unowned_access_names_the_task(arouted: Routed) -> None:
    async def stray() -> None:
        async with AsyncSession(arouted.engine) as session:
            await session.execute(text("SELECT 1"))

    task = asyncio.create_task(stray(), name="stray-task")
    with pytest.raises(OwnershipError, match=r"task 'stray-task' in thread .* is not allowed"):
        await task


@pytest.mark.asyncio
async def test_owner_ending_mid_query_discards_the_connection(arouted: Routed) -> None:
    if arouted.backend != "postgresql":
        pytest.skip("needs a query that waits on the server: pg_sleep")
    owner = await arouted.sandbox.acheckout(name="test_mid_query")
    started = asyncio.Event()

    async def slow() -> None:
        async with AsyncSession(arouted.engine) as session:
            await session.execute(text("SELECT 1"))
            started.set()
            await session.execute(text("SELECT pg_sleep(30)"))

    client = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0)  # let the client send its query
    await arouted.sandbox.acheckin(owner)
    with pytest.raises(
        OwnershipError, match=r"'test_mid_query' checked in .* the connection was discarded"
    ):
        await client
    async with await arouted.sandbox.acheckout(), AsyncSession(arouted.engine) as session:
        assert await session.scalar(text("SELECT 1")) == 1


@pytest.mark.asyncio
async def test_killed_backend_gives_a_clear_error(arouted: Routed, tag: str) -> None:
    if arouted.backend != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    plain = arouted.plain_engine()
    try:
        async with await arouted.sandbox.acheckout(name="test_fault_async"):
            async with AsyncSession(arouted.engine) as session:
                session.add(Item(name=tag + "a"))
                await session.commit()
                pid = await session.scalar(text("SELECT pg_backend_pid()"))
                with plain.connect() as admin:
                    admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                with pytest.raises(OwnershipError, match=r"'test_fault_async' was lost"):
                    await session.execute(text("SELECT 1"))
        async with await arouted.sandbox.acheckout(), AsyncSession(arouted.engine) as session:
            assert await session.scalar(text("SELECT pg_backend_pid()")) != pid
            assert await session.scalar(count_sql(tag)) == 0
    finally:
        plain.dispose()


@pytest.mark.asyncio
async def test_sync_and_async_engines_cannot_share_one_test(arouted: Routed) -> None:
    sync_scheme = {"postgresql": "postgresql+psycopg", "sqlite": "sqlite+pysqlite"}.get(
        arouted.backend, "mysql+pymysql"
    )
    sync_engine = create_engine(arouted.url.with_scheme(sync_scheme).render())
    install(sync_engine, arouted.sandbox)
    try:
        async with await arouted.sandbox.acheckout(name="test_two_drivers"):
            async with AsyncSession(arouted.engine) as session:
                await session.execute(text("SELECT 1"))
            with pytest.raises(
                OwnershipError,
                match=r"'test_two_drivers' already uses its connection through sqlalchemy:"
                r".*isolation=\"database\"",
            ):
                await asyncio.to_thread(_sync_select, sync_engine)
    finally:
        sync_engine.dispose()


def _sync_select(engine: object) -> None:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(text("SELECT 1"))


def make_app(engine: AsyncEngine) -> FastAPI:
    app = FastAPI()

    @app.post("/items/{name}")
    async def add(name: str) -> dict[str, str]:
        async with AsyncSession(engine) as session:
            session.add(Item(name=name))
            await session.commit()
        return {"name": name}

    @app.get("/items/{prefix}")
    async def listing(prefix: str) -> list[str]:
        async with AsyncSession(engine) as session:
            return list(await session.scalars(names_sql(prefix)))

    return app


@pytest.mark.asyncio
async def test_requests_through_asgi_transport_inherit_the_owner(arouted: Routed, tag: str) -> None:
    app = make_app(arouted.engine)
    async with await arouted.sandbox.acheckout():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post(f"/items/{tag}x")).status_code == 200
            assert (await client.post(f"/items/{tag}y")).status_code == 200
            assert (await client.get(f"/items/{tag}")).json() == [tag + "x", tag + "y"]
    assert arouted.committed(tag) == []


@pytest.fixture(params=async_params())
def sync_test_engine(request: pytest.FixtureRequest) -> Iterator[Routed]:
    """An async engine used from a synchronous test (through TestClient)."""
    from .conftest import _url_for

    driver = request.param
    url = _url_for(request, driver)
    engine = create_async_engine(url.with_scheme(ASYNC_SCHEMES[driver]).render())
    sandbox = Sandbox(url, name=f"sandbox-{driver}")
    install(engine, sandbox)
    yield Routed(driver, BACKEND_OF[driver], url, engine, sandbox)
    sandbox.close()
    asyncio.run(engine.dispose())


def test_testclient_requests_of_a_sync_test_share_its_transaction(
    sync_test_engine: Routed, tag: str
) -> None:
    routed = sync_test_engine
    app = make_app(routed.engine)
    client = TestClient(app)  # no `with`: every request runs on an event loop of its own
    with routed.sandbox.checkout(lazy=True, name="test_client"):
        assert client.post(f"/items/{tag}x").status_code == 200
        assert client.post(f"/items/{tag}y").status_code == 200
        assert client.get(f"/items/{tag}").json() == [tag + "x", tag + "y"]
        with client:  # and the same through a portal kept open
            assert client.get(f"/items/{tag}").json() == [tag + "x", tag + "y"]
    assert routed.committed(tag) == []
    with routed.sandbox.checkout(lazy=True):
        assert client.get(f"/items/{tag}").json() == []


def test_each_event_loop_gets_a_working_connection(sync_test_engine: Routed, tag: str) -> None:
    """Function-scoped event loops: a connection of a closed loop is replaced, quietly."""
    routed = sync_test_engine

    async def one_test(name: str) -> list[str]:
        async with await routed.sandbox.acheckout(name=name):
            async with AsyncSession(routed.engine) as session:
                session.add(Item(name=tag + name))
                await session.commit()
                return list(await session.scalars(names_sql(tag)))

    assert asyncio.run(one_test("first")) == [tag + "first"]
    assert asyncio.run(one_test("second")) == [tag + "second"]
    gc.collect()  # a connection left to the garbage collector would warn here
    assert routed.committed(tag) == []
