"""One background thread per process for ownership timeouts and deferred checkins.

Owners do not get a thread or a polling loop each: every deadline goes into
one timer wheel served by a single daemon thread that sleeps until the
earliest deadline. The common case costs no thread switch: an owner's
timeout is scheduled and cancelled (checkin) long before it is due, and a
deadline later than the one the thread already sleeps until does not wake
it.

Deadlines of one delay (every owner's ownership timeout) are due in the order
they were scheduled, so each delay keeps an insertion-ordered dict whose first
entry is its earliest; cancelling removes the entry, and the thread only
looks at the first entry of each delay. :func:`call_soon` requests go through
a ``queue.SimpleQueue`` instead, whose ``put`` is safe even from a
garbage-collector callback (an owner whose last reference disappears
schedules its own checkin that way): it takes no lock that the interrupted
code might hold.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable

__all__ = ["TimerHandle", "call_later", "call_soon"]

log = logging.getLogger("sqlsandbox.ownership")


class TimerHandle:
    """A scheduled call; :meth:`cancel` prevents it if it has not started."""

    __slots__ = ("bucket", "callback", "when")

    def __init__(
        self,
        when: float,
        callback: Callable[[], object],
        bucket: dict[TimerHandle, None] | None = None,
    ) -> None:
        self.when = when
        self.callback: Callable[[], object] | None = callback
        self.bucket = bucket

    def cancel(self) -> None:
        self.callback = None
        bucket = self.bucket
        if bucket is not None:
            self.bucket = None
            with _TIMER.lock:
                bucket.pop(self, None)

    @property
    def cancelled(self) -> bool:
        return self.callback is None


class _Timer:
    def __init__(self) -> None:
        #: call_soon handles, and None to make the thread look at the wheel again.
        self._inbox: queue.SimpleQueue[TimerHandle | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        #: delay -> pending handles of that delay, earliest first.
        self._wheel: dict[float, dict[TimerHandle, None]] = {}
        #: When the thread looks at the wheel next (guarded by lock).
        self._wake_at = math.inf
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        with self.lock:
            bucket = self._wheel.get(delay)
            if bucket is None:
                bucket = self._wheel[delay] = {}
            # The clock is read under the lock so that each bucket stays in order.
            handle = TimerHandle(time.monotonic() + delay, callback, bucket)
            bucket[handle] = None
            wake = handle.when < self._wake_at
            if wake:
                self._wake_at = handle.when
        if wake:
            self._inbox.put(None)
        self._ensure_thread()
        return handle

    def call_soon(self, callback: Callable[[], object]) -> TimerHandle:
        handle = TimerHandle(time.monotonic(), callback)
        self._inbox.put(handle)
        self._ensure_thread()
        return handle

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start()

    def _start(self) -> None:
        # Never reached from a GC callback in practice: the thread starts with
        # the first checkout, long before any owner can be collected.
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="sqlsandbox-timer", daemon=True
                )
                self._thread.start()

    def _due(self) -> tuple[list[TimerHandle], float]:
        """Take the handles that are due off the wheel; return them and the next deadline."""
        due: list[TimerHandle] = []
        earliest = math.inf
        with self.lock:
            now = time.monotonic()
            for delay, bucket in list(self._wheel.items()):
                while bucket:
                    handle = next(iter(bucket))
                    if handle.when > now:
                        earliest = min(earliest, handle.when)
                        break
                    del bucket[handle]
                    handle.bucket = None
                    due.append(handle)
                if not bucket:
                    del self._wheel[delay]
            self._wake_at = earliest
        return due, earliest

    def _run(self) -> None:
        while True:
            due, earliest = self._due()
            for handle in due:
                _fire(handle)
            timeout = None if earliest == math.inf else max(earliest - time.monotonic(), 0.0)
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                continue
            # Take everything already queued before looking at the wheel again.
            while True:
                if item is not None:
                    _fire(item)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break


def _fire(handle: TimerHandle) -> None:
    callback = handle.callback
    handle.callback = None
    if callback is None:
        return
    try:
        callback()
    except Exception:  # one failing callback must not stop every owner's timer
        log.exception("sqlsandbox timer callback %r failed", callback)


_TIMER = _Timer()


def call_later(delay: float, callback: Callable[[], object]) -> TimerHandle:
    """Run *callback* in the timer thread after *delay* seconds."""
    return _TIMER.call_later(delay, callback)


def call_soon(callback: Callable[[], object]) -> TimerHandle:
    """Run *callback* in the timer thread as soon as possible."""
    return _TIMER.call_soon(callback)
