"""An in-process event bus: subscribers, at-most-once delivery, periodic cleanup.

``publish`` only queues the event; a dispatcher task delivers it to every
matching subscriber. Event ids already processed are remembered so a
re-published event is delivered once; a cleanup task drops the ids of events
processed more than ``processed_event_max_age`` seconds ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .settings import get_settings

log = logging.getLogger(__name__)

Handler = Callable[["Event"], Awaitable[None] | None]


@dataclasses.dataclass(frozen=True)
class Event:
    """Something that happened, for whoever listens."""

    name: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    actor_id: int | None = None
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


class EventBus:
    """Deliver events to subscribers from a dispatcher task."""

    def __init__(
        self,
        *,
        cleanup_interval: float | None = None,
        max_age: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        settings = get_settings()
        self.cleanup_interval = (
            settings.event_cleanup_interval if cleanup_interval is None else cleanup_interval
        )
        self.max_age = timedelta(
            seconds=settings.processed_event_max_age if max_age is None else max_age
        )
        self._clock = clock
        self._subscribers: dict[int, tuple[str, Handler]] = {}
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[Event] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._cleanup_task: asyncio.Task[None] | None = None
        self.processed: dict[str, datetime] = {}
        self.failures: list[tuple[Event, BaseException]] = []
        self.dropped = 0

    # -- subscribers ------------------------------------------------------

    def subscribe(self, pattern: str, handler: Handler) -> int:
        """Call *handler* for events whose name matches *pattern* (``*`` wildcards)."""
        token = next(self._ids)
        self._subscribers[token] = (pattern, handler)
        return token

    def unsubscribe(self, token: int) -> None:
        """Stop calling the handler registered under *token*."""
        self._subscribers.pop(token, None)

    def on(self, pattern: str) -> Callable[[Handler], Handler]:
        """Register the decorated function as a subscriber for *pattern*."""

        def register(handler: Handler) -> Handler:
            self.subscribe(pattern, handler)
            return handler

        return register

    def subscribers_for(self, name: str) -> list[Handler]:
        """Return the handlers an event called *name* goes to, in subscription order."""
        return [
            h for pattern, h in self._subscribers.values() if fnmatch.fnmatchcase(name, pattern)
        ]

    # -- life cycle -------------------------------------------------------

    @property
    def running(self) -> bool:
        """Return whether the dispatcher is running."""
        return self._dispatcher is not None and not self._dispatcher.done()

    async def start(self) -> None:
        """Start the dispatcher and the cleanup task on the running loop."""
        if self.running:
            return
        self._queue = asyncio.Queue()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="event-bus-dispatcher")
        self._cleanup_task = asyncio.create_task(self._cleanup_loop(), name="event-bus-cleanup")

    async def stop(self) -> None:
        """Deliver what is queued, then stop both tasks."""
        if self._queue is not None and self.running:
            await self._queue.join()
        for task in (self._dispatcher, self._cleanup_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._dispatcher = self._cleanup_task = None
        self._queue = None

    async def drain(self) -> None:
        """Wait until every event published so far has been delivered."""
        if self._queue is not None and self.running:
            await self._queue.join()

    # -- publishing -------------------------------------------------------

    def publish(self, event: Event) -> bool:
        """Queue *event* for delivery; return False (and count it) when the bus is stopped."""
        if self._queue is None or not self.running:
            self.dropped += 1
            log.debug("event bus stopped, dropping %s", event.name)
            return False
        self._queue.put_nowait(event)
        return True

    async def deliver(self, event: Event) -> int:
        """Deliver *event* now, once per event id; return how many handlers ran."""
        if event.id in self.processed:
            return 0
        delivered = 0
        for handler in self.subscribers_for(event.name):
            try:
                result = handler(event)
                if result is not None:
                    await result
            except Exception as exc:
                # One broken subscriber must not starve the others.
                log.exception("subscriber %r failed on %s", handler, event.name)
                self.failures.append((event, exc))
            else:
                delivered += 1
        self.processed[event.id] = self._clock()
        return delivered

    async def _dispatch_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            event = await queue.get()
            try:
                await self.deliver(event)
            finally:
                queue.task_done()

    # -- cleanup ----------------------------------------------------------

    def cleanup(self) -> int:
        """Forget processed events older than the maximum age; return how many."""
        cutoff = self._clock() - self.max_age
        old = [event_id for event_id, at in self.processed.items() if at < cutoff]
        for event_id in old:
            del self.processed[event_id]
        return len(old)

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            removed = self.cleanup()
            if removed:
                log.info("event bus cleanup dropped %d processed event id(s)", removed)


#: The app's bus; subscribers register in ``reminders.main``.
bus = EventBus()
