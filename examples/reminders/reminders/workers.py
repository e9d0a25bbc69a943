"""A pool of notification workers, supervised: a crashed worker is replaced.

Jobs are reminder ids. A worker loads the reminder, sends the notification
through the pool's notifier, and records the outcome in the database
(``reminders.notified_at``, ``notify_attempts`` and an audit row). A
:class:`DeliveryError` is an expected failure, recorded as such; any other
exception is a bug that kills the worker, and the supervisor records the crash
and starts a new worker in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from . import audit
from .db import SessionLocal
from .events import Event, EventBus
from .models import Reminder, ReminderList

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Notification:
    """One message to one user about one reminder."""

    reminder_id: int
    to: str
    subject: str


class DeliveryError(Exception):
    """The notifier could not deliver now (a retryable, expected failure)."""


class Notifier(Protocol):
    async def send(self, notification: Notification) -> None: ...


class Outbox:
    """The default notifier: keeps messages in memory (a real app would send mail)."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)


@dataclasses.dataclass
class Outcome:
    """What happened to one job."""

    reminder_id: int
    status: str  # "sent", "failed", "missing", "skipped" or "crashed"
    error: str | None = None


class NotificationPool:
    """Process notification jobs with ``size`` workers and a supervisor."""

    def __init__(
        self,
        *,
        size: int,
        notifier: Notifier,
        session_factory: async_sessionmaker[AsyncSession] = SessionLocal,
        bus: EventBus | None = None,
        name: str = "notifications",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self.notifier = notifier
        self.name = name
        self._session_factory = session_factory
        self._bus = bus
        self._clock = clock
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._current: dict[int, int] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self.outcomes: list[Outcome] = []
        self.restarts = 0

    @property
    def running(self) -> bool:
        """Return whether the supervisor is running."""
        return self._supervisor is not None and not self._supervisor.done()

    @property
    def workers(self) -> dict[int, asyncio.Task[None]]:
        """Return the current worker task of every slot."""
        return dict(self._workers)

    async def start(self) -> None:
        """Start the workers and their supervisor on the running loop."""
        if self.running:
            return
        for slot in range(self.size):
            self._spawn(slot)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def stop(self) -> None:
        """Stop the supervisor, then the workers; queued jobs stay queued."""
        tasks = [self._supervisor, *self._workers.values()]
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._supervisor = None
        self._workers.clear()

    def enqueue(self, reminder_id: int) -> None:
        """Queue a notification for *reminder_id*."""
        self._queue.put_nowait(reminder_id)

    @property
    def pending(self) -> int:
        """Return how many jobs wait in the queue."""
        return self._queue.qsize()

    async def join(self) -> None:
        """Wait until every queued job has been processed (or its worker crashed)."""
        await self._queue.join()

    # -- workers ------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        self._workers[slot] = asyncio.create_task(
            self._work(slot), name=f"{self.name}-worker-{slot}"
        )

    async def _work(self, slot: int) -> None:
        while True:
            reminder_id = await self._queue.get()
            self._current[slot] = reminder_id
            # A crash propagates with the job still "current": the supervisor
            # records it and only then marks the job done, so join() returns
            # after the crash is in the database.
            outcome = await self._deliver(reminder_id)
            del self._current[slot]
            self.outcomes.append(outcome)
            self._queue.task_done()

    async def _deliver(self, reminder_id: int) -> Outcome:
        async with self._session_factory() as session:
            reminder = await session.scalar(
                select(Reminder)
                .where(Reminder.id == reminder_id)
                .options(selectinload(Reminder.reminder_list).selectinload(ReminderList.owner))
            )
            if reminder is None:
                return Outcome(reminder_id, "missing")
            if reminder.completed_at is not None:
                return Outcome(reminder_id, "skipped")
            owner = reminder.reminder_list.owner
            message = Notification(reminder.id, owner.email, f"Reminder: {reminder.title}")
            reminder.notify_attempts += 1
            try:
                await self.notifier.send(message)
            except DeliveryError as exc:
                await audit.record(
                    session,
                    "notification.failed",
                    actor_id=None,
                    entity="reminder",
                    entity_id=reminder.id,
                    details={"error": str(exc), "attempt": reminder.notify_attempts},
                )
                await session.commit()
                return Outcome(reminder_id, "failed", str(exc))
            reminder.notified_at = self._clock()
            await audit.record(
                session,
                "notification.sent",
                actor_id=None,
                entity="reminder",
                entity_id=reminder.id,
                details={"to": owner.email, "attempt": reminder.notify_attempts},
            )
            await session.commit()
        if self._bus is not None:
            self._bus.publish(
                Event("notification.sent", {"reminder_id": reminder_id, "to": owner.email})
            )
        return Outcome(reminder_id, "sent")

    # -- supervision ----------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            by_task = {task: slot for slot, task in self._workers.items()}
            done, _ = await asyncio.wait(by_task, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                slot = by_task[task]
                error = None if task.cancelled() else task.exception()
                reminder_id = self._current.pop(slot, None)
                log.error("%s crashed: %r; starting a new one", task.get_name(), error)
                try:
                    await self._record_crash(slot, reminder_id, error)
                except Exception:
                    log.exception("could not record the crash of %s", task.get_name())
                finally:
                    if reminder_id is not None:
                        self.outcomes.append(Outcome(reminder_id, "crashed", repr(error)))
                        self._queue.task_done()
                self.restarts += 1
                self._spawn(slot)

    async def _record_crash(
        self, slot: int, reminder_id: int | None, error: BaseException | None
    ) -> None:
        async with self._session_factory() as session:
            await audit.record(
                session,
                "worker.crashed",
                actor_id=None,
                entity="worker",
                entity_id=slot,
                details={"error": repr(error), "reminder_id": reminder_id, "pool": self.name},
            )
            await session.commit()
