"""Sessions of one owner that overlap, through real SQLAlchemy sessions and a FastAPI app.

The test's own session stays open while the app serves requests; a request's
session stays open while its background task commits. Only a session that
wrote undoes what other sessions committed after its write (see
docs/ownership.md#concurrent-sessions).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from .conftest import Routed, items, names_sql


async def anames(engine: AsyncEngine, tag: str) -> list[str]:
    async with AsyncSession(engine) as session:
        return list(await session.scalars(names_sql(tag)))


def names(engine: object, tag: str) -> list[str]:
    with Session(engine) as session:  # type: ignore[arg-type]
        return list(session.scalars(names_sql(tag)))


@pytest.mark.asyncio
async def test_the_test_session_closing_keeps_what_a_request_committed(
    arouted: Routed, tag: str
) -> None:
    engine = arouted.engine
    async with await arouted.sandbox.acheckout():
        test_session = AsyncSession(engine)
        assert list(await test_session.scalars(names_sql(tag))) == []  # autobegins
        async with AsyncSession(engine) as request_session:
            await request_session.execute(insert(items).values(name=tag + "posted"))
            await request_session.commit()
        await test_session.close()
        assert await anames(engine, tag) == [tag + "posted"]
    assert arouted.committed(tag) == []


def test_a_sync_test_session_rolling_back_keeps_what_a_request_committed(
    routed: Routed, tag: str
) -> None:
    engine = routed.engine
    with routed.sandbox.checkout():
        test_session = Session(engine)
        assert list(test_session.scalars(names_sql(tag))) == []
        with Session(engine) as request_session:
            request_session.execute(insert(items).values(name=tag + "posted"))
            request_session.commit()
        test_session.rollback()
        assert list(test_session.scalars(names_sql(tag))) == [tag + "posted"]
        test_session.close()
        assert names(engine, tag) == [tag + "posted"]
    assert routed.committed(tag) == []


@pytest.mark.asyncio
async def test_a_background_commit_survives_the_request_session_closing(
    arouted: Routed, tag: str
) -> None:
    engine = arouted.engine
    async with await arouted.sandbox.acheckout():
        request_session = AsyncSession(engine)
        await request_session.execute(insert(items).values(name=tag + "request"))
        await request_session.commit()
        await request_session.scalars(names_sql(tag))  # autobegins again, for a read
        async with AsyncSession(engine) as task_session:
            await task_session.execute(insert(items).values(name=tag + "task"))
            await task_session.commit()
        await request_session.close()
        assert await anames(engine, tag) == [tag + "request", tag + "task"]


def test_sync_sessions_keep_the_commit_of_a_session_opened_after_them(
    routed: Routed, tag: str
) -> None:
    engine = routed.engine
    with routed.sandbox.checkout():
        with Session(engine) as request_session:
            request_session.execute(insert(items).values(name=tag + "request"))
            request_session.commit()
            request_session.scalars(names_sql(tag)).all()
            with Session(engine) as task_session:
                task_session.execute(insert(items).values(name=tag + "task"))
                task_session.commit()
        assert names(engine, tag) == [tag + "request", tag + "task"]


@pytest.mark.asyncio
async def test_the_test_session_that_wrote_after_a_request_undoes_only_its_own_rows(
    arouted: Routed, tag: str
) -> None:
    engine = arouted.engine
    async with await arouted.sandbox.acheckout():
        async with AsyncSession(engine) as test_session:
            await test_session.scalars(names_sql(tag))
            async with AsyncSession(engine) as request_session:
                await request_session.execute(insert(items).values(name=tag + "request"))
                await request_session.commit()
            await test_session.execute(insert(items).values(name=tag + "unsaved"))
            await test_session.rollback()
        assert await anames(engine, tag) == [tag + "request"]


@pytest.mark.asyncio
async def test_concurrent_sessions_racing_for_one_unique_name(arouted: Routed, tag: str) -> None:
    """Nine lose with IntegrityError and roll back; the winner and the others' rows stay."""
    engine = arouted.engine
    make = async_sessionmaker(engine)

    async def create(name: str) -> str:
        async with make() as session:
            await session.scalars(names_sql(tag))
            try:
                await session.execute(insert(items).values(name=name))
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return "conflict"
            return "created"

    async with await arouted.sandbox.acheckout():
        results = await asyncio.gather(
            *(create(tag + "same") for _ in range(5)),
            *(create(f"{tag}own{n}") for n in range(3)),
        )
        assert sorted(results) == ["conflict"] * 4 + ["created"] * 4
        assert await anames(engine, tag) == [
            tag + "own0",
            tag + "own1",
            tag + "own2",
            tag + "same",
        ]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The app's session per request: a FastAPI yield dependency."""
    async with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def record_later(sessions: async_sessionmaker[AsyncSession], name: str) -> None:
    async with sessions() as session:
        await session.execute(insert(items).values(name=name))
        await session.commit()


def make_app(engine: AsyncEngine) -> FastAPI:
    """A FastAPI app with a yield dependency session and a background task."""
    app = FastAPI()
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @app.post("/items/{name}")
    async def create(name: str, session: SessionDep, background: BackgroundTasks) -> dict[str, int]:
        await session.execute(insert(items).values(name=name))
        await session.commit()
        # A read after the commit opens the session's transaction again; it
        # closes when the dependency ends, after the background task ran.
        count = len((await session.scalars(select(items.c.id))).all())
        background.add_task(record_later, app.state.sessions, name + "-audit")
        return {"count": count}

    @app.get("/items/{prefix}")
    async def listing(prefix: str, session: SessionDep) -> list[str]:
        return list(await session.scalars(names_sql(prefix)))

    return app


@pytest.mark.asyncio
async def test_fastapi_background_task_commits_survive_the_yield_dependency(
    arouted: Routed, tag: str
) -> None:
    app = make_app(arouted.engine)
    async with await arouted.sandbox.acheckout():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post(f"/items/{tag}a")).status_code == 200
            assert (await client.post(f"/items/{tag}b")).status_code == 200
            assert (await client.get(f"/items/{tag}")).json() == [
                tag + "a",
                tag + "a-audit",
                tag + "b",
                tag + "b-audit",
            ]
        async with AsyncSession(arouted.engine) as test_session:
            assert list(await test_session.scalars(names_sql(tag + "a"))) == [
                tag + "a",
                tag + "a-audit",
            ]
    assert arouted.committed(tag) == []
