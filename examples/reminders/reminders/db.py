"""The app's engines and session factories, built at import time like most apps do."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from .settings import get_settings

settings = get_settings()

#: The API, the event bus subscribers and the notification workers use this one (asyncpg).
async_engine = create_async_engine(settings.database_url, pool_size=5, max_overflow=10)
SessionLocal = async_sessionmaker(async_engine, expire_on_commit=False)

#: Reports and the command line use this one (psycopg 3).
sync_engine = create_engine(settings.sync_database_url, pool_size=2, max_overflow=4)
SyncSessionLocal = sessionmaker(sync_engine, expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    """Yield a session for one request (a FastAPI dependency)."""
    async with SessionLocal() as session:
        yield session


def get_sync_session() -> Session:
    """Return a new sync session (the caller closes it)."""
    return SyncSessionLocal()
