"""One background thread per process for ownership timeouts and deferred checkins.

Owners do not get a thread or a polling loop each: every deadline goes into
one heap served by a single daemon thread that sleeps until the earliest
deadline. Requests reach the thread through a ``queue.SimpleQueue``, whose
``put`` is safe even from a garbage-collector callback (an owner whose last
reference disappears schedules its own checkin that way); only the timer
thread touches the heap. Cancelled entries stay in the heap until they reach
its top, which keeps cancel O(1).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable

__all__ = ["TimerHandle", "call_later", "call_soon"]

log = logging.getLogger("sqlsandbox.ownership")


class TimerHandle:
    """A scheduled call; :meth:`cancel` prevents it if it has not started."""

    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self.callback = None

    @property
    def cancelled(self) -> bool:
        return self.callback is None


class _Timer:
    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[TimerHandle] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        handle = TimerHandle(when, callback)
        self._inbox.put(handle)
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start()
        return handle

    def _start(self) -> None:
        # Never reached from a GC callback in practice: the thread starts with
        # the first checkout, long before any owner can be collected.
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="sqlsandbox-timer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        heap: list[tuple[float, int, TimerHandle]] = []
        seq = itertools.count()
        while True:
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
            timeout = None if not heap else max(heap[0][0] - time.monotonic(), 0.0)
            try:
                handle = self._inbox.get(timeout=timeout)
            except queue.Empty:
                pass
            else:
                heapq.heappush(heap, (handle.when, next(seq), handle))
                # Take everything already queued before running anything.
                while True:
                    try:
                        handle = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    heapq.heappush(heap, (handle.when, next(seq), handle))
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                handle = heapq.heappop(heap)[2]
                callback = handle.callback
                handle.callback = None
                if callback is None:
                    continue
                try:
                    callback()
                except Exception:  # one failing callback must not stop every owner's timer
                    log.exception("sqlsandbox timer callback %r failed", callback)


_TIMER = _Timer()


def call_later(delay: float, callback: Callable[[], object]) -> TimerHandle:
    """Run *callback* in the timer thread after *delay* seconds."""
    return _TIMER.call_at(time.monotonic() + delay, callback)


def call_soon(callback: Callable[[], object]) -> TimerHandle:
    """Run *callback* in the timer thread as soon as possible."""
    return _TIMER.call_at(time.monotonic(), callback)
