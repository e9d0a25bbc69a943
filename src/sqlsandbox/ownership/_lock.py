"""A first-come-first-served lock shared by threads and asyncio tasks.

Several users of one owner's connection (the test's tasks, a TestClient
thread, an executor) take turns on it. They may be threads, tasks of one
loop or tasks of different loops, so neither ``threading.Lock`` nor
``asyncio.Lock`` fits. The uncontended path takes a plain mutex and never
yields; a waiter blocks on its own event (threads) or future (tasks).

The lock is reentrant for the same holder (a thread id or a task), so a
driver may hold it across a streaming cursor and still run statements.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

__all__ = ["OpLock", "current_holder", "running_task"]

_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_get_ident = threading.get_ident


def running_task() -> asyncio.Task[Any] | None:
    """Return the running asyncio task, or None (outside a loop or a task)."""
    # Not asyncio.current_task(): outside a loop it raises and catches an
    # exception, a few microseconds on every checkout, lease and turn.
    loop = _get_running_loop()
    return _current_task(loop) if loop is not None else None


def current_holder() -> object:
    """Return who is running: the current asyncio task, else the thread id."""
    loop = _get_running_loop()
    if loop is not None:
        task = _current_task(loop)
        if task is not None:
            return task
    return _get_ident()


class _Waiter:
    __slots__ = ("event", "future", "granted", "holder", "loop")

    def __init__(
        self,
        holder: object,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.holder = holder
        self.granted = False
        self.loop = loop
        self.future = future
        # A lock acquired once acts as an event a thread can wait on with a timeout.
        self.event: threading.Lock | None = None
        if future is None:
            self.event = threading.Lock()
            self.event.acquire()

    def wake(self) -> bool:
        """Tell the waiter it holds the lock now; return False if it cannot be told."""
        if self.event is not None:
            self.event.release()
            return True
        assert self.loop is not None and self.future is not None
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # its loop is closed: nobody is waiting any more
            return False
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class OpLock:
    """FIFO, reentrant lock for threads and tasks of any loop."""

    __slots__ = ("_depth", "_holder", "_mutex", "_waiters", "since")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._holder: object = None
        self._depth = 0
        self._waiters: deque[_Waiter] = deque()
        #: What the current holder is doing, for queue-timeout messages.
        self.since: Any = None

    @property
    def holder(self) -> object:
        """Return the current holder (task or thread id), or None."""
        return self._holder

    def locked(self) -> bool:
        return self._holder is not None

    def try_acquire(self, holder: object) -> bool:
        """Take the lock if it is free or already *holder*'s; never wait."""
        with self._mutex:
            if self._holder is None:
                self._holder = holder
                self._depth = 1
                return True
            if self._holder is holder or self._holder == holder:
                self._depth += 1
                return True
            return False

    def acquire(self, holder: object, timeout: float | None) -> bool:
        """Take the lock, blocking this thread up to *timeout* seconds."""
        with self._mutex:
            if self._holder is None:
                self._holder = holder
                self._depth = 1
                return True
            if self._holder is holder or self._holder == holder:
                self._depth += 1
                return True
            waiter = _Waiter(holder)
            self._waiters.append(waiter)
        assert waiter.event is not None
        if waiter.event.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            return True
        with self._mutex:
            if waiter.granted:
                return True
            self._waiters.remove(waiter)
            return False

    async def aacquire(self, holder: object, timeout: float | None) -> bool:  # noqa: ASYNC109 - a queue wait, not a call timeout
        """Take the lock, suspending this task up to *timeout* seconds."""
        with self._mutex:
            if self._holder is None:
                self._holder = holder
                self._depth = 1
                return True
            if self._holder is holder:
                self._depth += 1
                return True
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            waiter = _Waiter(holder, loop=loop, future=future)
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(future)
        except TimeoutError:
            with self._mutex:
                if waiter.granted:
                    return True
                self._waiters.remove(waiter)
                return False
        except BaseException:
            with self._mutex:
                if not waiter.granted:
                    self._waiters.remove(waiter)
                    raise
            # Granted while being cancelled: pass the lock on before leaving.
            self.release()
            raise
        return True

    def release(self) -> None:
        """Release one level; hand the lock to the next waiter when it is free."""
        with self._mutex:
            self._depth -= 1
            if self._depth > 0:
                return
            self.since = None
            while self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
                self._holder = waiter.holder
                self._depth = 1
                if waiter.wake():
                    return
            self._holder = None
            self._depth = 0

    def force_release(self) -> None:
        """Release completely, whatever the depth (used when a connection is discarded)."""
        with self._mutex:
            self.since = None
            while self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
                self._holder = waiter.holder
                self._depth = 1
                if waiter.wake():
                    return
            self._holder = None
            self._depth = 0
