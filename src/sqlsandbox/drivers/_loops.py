"""Run code on an event loop right before it closes.

Loop-bound connections (asyncpg, aiomysql) can only be rolled back or closed
on the event loop that opened them. Test runners close a test's loop before
the synchronous teardown that follows it: pytest-asyncio's function-scoped
loop, anyio's runner, ``IsolatedAsyncioTestCase``. What is still open then
can only be dropped: no checkin (so no sequence restore), and asyncpg leaves
an unclosed socket behind (a ResourceWarning, an error under
``filterwarnings = error``).

All of those runners close their loop with ``asyncio.Runner.close()`` (as
``asyncio.run()`` does), which cancels the remaining tasks and then calls
``loop.shutdown_asyncgens()`` while the loop still runs: every asynchronous
generator started on the loop is closed there, and its ``finally`` block may
await. :func:`at_loop_end` starts one such generator per loop and runs its
callbacks from that ``finally``. A loop closed without shutting down its
generators (a bare ``loop.close()``) runs none of them; its callbacks are
dropped the next time :func:`at_loop_end` is called, or at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from ..ownership import host_loop

__all__ = ["add_loop_end_listener", "at_loop_end", "remove_loop_end_listener", "watch_adapter"]

Callback = Callable[[], Awaitable[object]]
#: Called with the driver connection of an owner when the loop it is bound to ends.
Listener = Callable[[Any], Awaitable[object]]


class _Watch:
    """The callbacks of one loop, and the generator that runs them."""

    __slots__ = ("agen", "callbacks", "done", "loop_ref")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_ref = weakref.ref(loop)
        self.callbacks: list[Callback] = []
        self.agen: AsyncGenerator[None, None] | None = None
        self.done = False


_LOCK = threading.Lock()
#: id(loop) -> its watch. The generator's finalizer hook keeps the loop alive
#: while its watch is here, so the id stays that loop's.
_WATCHES: dict[int, _Watch] = {}
_LISTENERS: list[Listener] = []


async def _run_at_end(watch: _Watch) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if not watch.done:
            # Callbacks added meanwhile (by a callback) join this list.
            while watch.callbacks:
                callback = watch.callbacks.pop(0)
                # Each callback reports its own failures; one must not stop the others.
                with contextlib.suppress(Exception):
                    await callback()
            watch.done = True
            loop = watch.loop_ref()
            with _LOCK:
                if loop is not None and _WATCHES.get(id(loop)) is watch:
                    del _WATCHES[id(loop)]


def _drop(watch: _Watch) -> None:
    """Close the generator of a loop that will never shut it down, without running callbacks."""
    watch.done = True
    watch.callbacks.clear()
    agen, watch.agen = watch.agen, None
    if agen is not None:
        # Closed here, its finalizer hook (which needs the loop) never runs.
        with contextlib.suppress(StopIteration, RuntimeError):
            agen.aclose().send(None)


def _sweep() -> None:
    """Drop the watches of loops that closed without shutting down their generators."""
    with _LOCK:
        dead = [
            (key, watch)
            for key, watch in _WATCHES.items()
            if (loop := watch.loop_ref()) is None or loop.is_closed()
        ]
        for key, _watch in dead:
            del _WATCHES[key]
    for _key, watch in dead:
        _drop(watch)


@atexit.register
def _drop_all() -> None:
    with _LOCK:
        watches = list(_WATCHES.values())
        _WATCHES.clear()
    for watch in watches:
        _drop(watch)


def at_loop_end(callback: Callback) -> bool:
    """Await ``callback()`` on the running event loop when it shuts down.

    Callbacks run in the order they were added, after the loop's remaining
    tasks were cancelled; one that raises does not stop the others. Returns
    False (and does nothing) when the loop's end cannot be seen: no running
    loop, the sandbox's host loop (it never ends), or a loop without
    asynchronous generator hooks.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    if host_loop().in_host():
        return False
    _sweep()
    with _LOCK:
        watch = _WATCHES.get(id(loop))
        if watch is not None and watch.loop_ref() is loop:
            if watch.done:
                return False
            watch.callbacks.append(callback)
            return True
    # A generator started after the shutdown would never be closed (and asyncio warns).
    if sys.get_asyncgen_hooks().firstiter is None or getattr(
        loop, "_asyncgens_shutdown_called", False
    ):
        return False
    watch = _Watch(loop)
    watch.callbacks.append(callback)
    agen = _run_at_end(watch)
    # Its first step registers it with the loop (the loop's firstiter hook)
    # and stops at the yield: no await, so no loop round trip is needed.
    with contextlib.suppress(StopIteration):
        agen.asend(None).send(None)
    watch.agen = agen
    with _LOCK:
        _WATCHES[id(loop)] = watch
    return True


def add_loop_end_listener(listener: Listener) -> None:
    """Call ``await listener(raw)`` when an owner connection's event loop shuts down.

    *raw* is the driver connection (``Owner.connection``) of an adapter that
    :func:`watch_adapter` watches; the listener may check its owner in, which
    then rolls back on that loop while it still runs.
    """
    with _LOCK:
        _LISTENERS.append(listener)


def remove_loop_end_listener(listener: Listener) -> None:
    """Stop calling *listener*; unknown listeners are ignored."""
    with _LOCK:
        with contextlib.suppress(ValueError):
            _LISTENERS.remove(listener)


def watch_adapter(adapter: Any) -> None:
    """Close loop-bound *adapter* politely on its loop when that loop shuts down.

    Call it on the loop that opened the adapter's connection. Listeners hear
    of it first (to check its owner in while the loop runs); then, if the
    connection is still open, it is closed: nobody can use it once its loop
    is gone, and dropping it later would skip the goodbye and leave a socket
    for the garbage collector.
    """
    ref = weakref.ref(adapter)

    async def end() -> None:
        found = ref()
        if found is None:
            return
        with _LOCK:
            listeners = list(_LISTENERS)
        for listener in listeners:
            with contextlib.suppress(Exception):
                await listener(found.raw)
        if not found.is_broken():
            try:
                await found.close()
            except Exception:
                found.discard()

    at_loop_end(end)
