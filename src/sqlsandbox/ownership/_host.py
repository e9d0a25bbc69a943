"""A private event loop in a daemon thread for loop-bound connections.

asyncpg and aiomysql connections only work on the loop that opened them. A
synchronous test that drives an async app through Starlette's TestClient
runs every request on a loop of its own, possibly a new one each time, yet
all requests must share the test's one transaction. Such connections are
opened and used on this host loop instead; callers on other loops await
the host through ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["HostLoop", "abort_transport", "host_loop", "shutdown_socket"]

T = TypeVar("T")


class HostLoop:
    """An event loop running forever in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the running host loop, starting its thread if needed."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                new = asyncio.new_event_loop()

                def serve() -> None:
                    asyncio.set_event_loop(new)
                    new.call_soon(ready.set)
                    new.run_forever()

                threading.Thread(target=serve, name="sqlsandbox-host-loop", daemon=True).start()
                ready.wait()
                self._loop = new
            return self._loop

    def in_host(self) -> bool:
        """Return whether the caller runs on the host loop."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def run(
        self, coro: Coroutine[Any, Any, T], *, context: contextvars.Context | None = None
    ) -> T:
        """Run *coro* on the host loop and await its result from another loop.

        The host task runs in a copy of *context* (default: the caller's).
        """
        if self.in_host() and context is None:
            return await coro
        submit = asyncio.run_coroutine_threadsafe
        if context is not None:
            future = context.run(submit, coro, self.loop)
        else:
            future = submit(coro, self.loop)
        return await asyncio.wrap_future(future)

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run *coro* on the host loop and block this thread until it is done."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


_HOST = HostLoop()


def host_loop() -> HostLoop:
    """Return the process-wide host loop."""
    return _HOST


def abort_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close an asyncio transport without I/O, even when its event loop is closed.

    ``transport.abort()`` needs a live loop to finish closing; on a closed one
    it raises and leaves the socket open (and a ResourceWarning behind). Then
    the socket is closed directly. For ``discard()`` of loop-bound adapters.
    """
    if transport is None:
        return
    try:
        transport.abort()  # type: ignore[attr-defined]
        return
    except RuntimeError:
        pass
    sock = getattr(transport, "_sock", None)
    if sock is not None:
        sock.close()
        transport._sock = None  # type: ignore[attr-defined]


def shutdown_socket(fd: int) -> None:
    """Shut down the connection behind socket *fd*, waking whoever reads it.

    For ``interrupt()``: unlike a cancel request, which the server ignores
    when the query has not started yet, this always ends a pending read
    (the reader sees the connection close). Never raises.
    """
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
