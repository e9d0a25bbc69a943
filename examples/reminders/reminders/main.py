"""The FastAPI application: routes, and a lifespan that runs the bus and the workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import subscribers
from .db import async_engine, sync_engine
from .events import bus
from .routes import auth, lists, misc, reminders, tags
from .settings import get_settings
from .workers import NotificationPool, Outbox


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the event bus and the notification workers; stop them on shutdown."""
    tokens = subscribers.register(bus)
    await bus.start()
    outbox = Outbox()
    pool = NotificationPool(size=get_settings().notification_workers, notifier=outbox, bus=bus)
    await pool.start()
    app.state.outbox = outbox
    app.state.notifications = pool
    try:
        yield
    finally:
        await pool.join()
        await pool.stop()
        await bus.stop()
        for token in tokens:
            bus.unsubscribe(token)
        del app.state.notifications
        # Close pooled connections while their event loop still runs.
        await async_engine.dispose()
        sync_engine.dispose()


def create_app() -> FastAPI:
    """Build the application."""
    app = FastAPI(title="Reminders", lifespan=lifespan)
    for module in (auth, lists, reminders, tags, misc):
        app.include_router(module.router)
    return app


app = create_app()
