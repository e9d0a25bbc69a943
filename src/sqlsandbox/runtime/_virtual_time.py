"""Virtual time for asyncio: the loop's clock jumps to the next timer when nothing else can happen.

A :class:`VirtualClock` attaches to one running (or not yet running) selector
event loop *instance*: it replaces the instance's ``time`` and its selector's
``select`` and watches executor calls and client sockets. Nothing is
subclassed and no loop is created, so it works with whatever made the loop:
pytest-asyncio (any mode, any loop scope), anyio's pytest plugin, or
``asyncio.Runner(loop_factory=new_virtual_time_loop)``.

When the loop would block until its next timer, the clock jumps there at once,
unless something real is still under way; then the loop waits in real time
and the clock advances by the real time waited:

- executor work (``run_in_executor``, ``asyncio.to_thread``) not finished;
- a socket with a pending write, or a client connection that sent data and
  has not received anything since (a database query in flight);
- a file descriptor watched with ``add_reader`` outside a transport
  (psycopg's async waits, ``sock_recv`` and friends);
- a subprocess whose exit is awaited;
- any I/O seen in the last ``idle_grace`` real seconds, when set;
- a :meth:`VirtualClock.real_time` block.

Timers keep their order because the clock only ever jumps to the earliest one.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any

from .._exceptions import ConfigError, VirtualDeadlineError
from ._hangs import dump_tasks

__all__ = [
    "VirtualClock",
    "VirtualDeadlineError",
    "current_clock",
    "new_virtual_time_loop",
    "virtual_time",
]

_ATTR = "_sqlsandbox_virtual_clock"
_AWAITING = "_sqlsandbox_awaiting_reply"


def _check_loop(loop: asyncio.AbstractEventLoop) -> selectors.BaseSelector:
    selector = getattr(loop, "_selector", None)
    if not isinstance(loop, asyncio.BaseEventLoop) or selector is None:
        raise ConfigError(
            f"virtual time needs an asyncio selector event loop, but the loop is "
            f"{type(loop).__module__}.{type(loop).__qualname__} (uvloop and the Windows "
            "proactor loop cannot be driven). Run these tests on the default asyncio loop, "
            "or remove @pytest.mark.virtual_time / virtual_time = true for them."
        )
    return selector  # type: ignore[no-any-return]


class VirtualClock:
    """Drive one event loop's clock: jump to the next timer when only timers are left.

    ``idle_grace`` (real seconds) makes the clock wait that long after the
    last I/O before it jumps, for work it cannot see (threads that are not
    executors, such as aiosqlite's or anyio's worker threads).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, idle_grace: float = 0.0) -> None:
        self.loop = loop
        self.idle_grace = idle_grace
        self._selector = _check_loop(loop)
        self._now = 0.0
        self._start = 0.0
        self._active = False
        self._holds = 0
        self._last_io = 0.0
        self._executor_futures: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()
        self._subprocesses: weakref.WeakSet[Any] = weakref.WeakSet()
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._saved: dict[str, Any] = {}
        self._saved_select: Any = None
        #: How many times the clock jumped, and by how many seconds in total.
        self.jumps = 0
        self.jumped = 0.0

    # -- the clock -------------------------------------------------------------------

    def time(self) -> float:
        """Return the loop's current (virtual) time."""
        return self._now

    @property
    def elapsed(self) -> float:
        """Seconds of loop time since this clock was activated."""
        return self._now - self._start

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``; timers that became due run next."""
        if seconds < 0:
            raise ValueError("virtual time never goes backwards; pass seconds >= 0")
        self._now += seconds

    @contextlib.contextmanager
    def real_time(self) -> Iterator[None]:
        """Keep the clock from jumping inside the block (it follows real time)."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1

    @property
    def active(self) -> bool:
        """Whether the clock currently drives its loop."""
        return self._active

    # -- attach / detach ---------------------------------------------------------------

    def activate(self) -> VirtualClock:
        """Start driving the loop; its time continues from where it is now."""
        if self._active:
            return self
        other = getattr(self.loop, _ATTR, None)
        if other is not None and other is not self and other.active:
            raise ConfigError(
                "virtual time is already active on this event loop; "
                "do not nest virtual_time() blocks or combine the mark with another clock."
            )
        self._now = self._start = self.loop.time()
        loop_dict = vars(self.loop)
        for name, replacement in (
            ("time", self.time),
            ("run_in_executor", self._run_in_executor),
            ("_make_socket_transport", self._make_socket_transport),
            ("_make_subprocess_transport", self._make_subprocess_transport),
        ):
            if hasattr(self.loop, name):
                self._saved[name] = loop_dict.get(name, _MISSING)
                setattr(self.loop, name, replacement)
        self._saved_select = vars(self._selector).get("select", _MISSING)
        self._original_select = self._selector.select
        self._selector.select = self._select  # type: ignore[method-assign,assignment]
        setattr(self.loop, _ATTR, self)
        self._active = True
        for key in list(self._selector.get_map().values()):
            owner = _reader_owner(key)
            if isinstance(owner, asyncio.BaseTransport):
                self._watch(owner)
        return self

    def deactivate(self) -> None:
        """Stop driving the loop; from now on its clock flows in real time from here."""
        if not self._active:
            return
        self._active = False
        loop_dict = vars(self.loop)
        for name, saved in self._saved.items():
            if saved is _MISSING:
                loop_dict.pop(name, None)
            else:
                loop_dict[name] = saved
        self._saved.clear()
        if self._saved_select is _MISSING:
            vars(self._selector).pop("select", None)
        else:
            self._selector.select = self._saved_select  # type: ignore[method-assign]
        # Keep time monotonic: a loop that jumped ahead must not fall back to the
        # real clock, or timers set in virtual time would wait for real.
        current = vars(self.loop).get("time")
        base = current.base if isinstance(current, _OffsetTime) else self.loop.time
        offset = self._now - base()
        if offset > 0:
            # One wrapper around the original clock, however many tests ran on this loop.
            self.loop.time = _OffsetTime(base, offset)  # type: ignore[method-assign]
        vars(self.loop).pop(_ATTR, None)
        self._unwatch_all()

    def __enter__(self) -> VirtualClock:
        return self.activate()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    # -- what keeps the clock from jumping ----------------------------------------------

    def blocker(self) -> str | None:
        """Say what real activity is under way (so the clock must not jump), or None."""
        if self._holds:
            return "a VirtualClock.real_time() block"
        if any(not future.done() for future in self._executor_futures):
            return "executor work (run_in_executor / to_thread)"
        for process in self._subprocesses:
            if getattr(process, "_exit_waiters", None):
                return "a subprocess whose exit is awaited"
        for key in self._selector.get_map().values():
            reader, writer = key.data if isinstance(key.data, tuple) else (key.data, None)
            if writer is not None and not getattr(writer, "_cancelled", False):
                return f"a pending write on fd {key.fd}"
            if reader is None or getattr(reader, "_cancelled", False):
                continue
            callback = getattr(reader, "_callback", None)
            owner = getattr(callback, "__self__", None)
            if owner is self.loop:
                continue  # the self-pipe and listening servers: nothing in flight
            if isinstance(owner, asyncio.BaseTransport):
                if owner not in self._watched:
                    self._watch(owner)  # made meanwhile, e.g. under TLS
                if getattr(owner, _AWAITING, False):
                    return f"a reply on fd {key.fd} (the client sent data and waits)"
                state = getattr(getattr(owner, "_protocol", None), "_state", None)
                if getattr(state, "name", "") == "DO_HANDSHAKE":
                    return f"a TLS handshake on fd {key.fd}"
                continue
            return f"I/O on fd {key.fd} ({getattr(callback, '__qualname__', callback)})"
        if self.idle_grace and time.perf_counter() - self._last_io < self.idle_grace:
            return "recent I/O (idle_grace)"
        return None

    def _select(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._original_select(0)
        if ready or timeout == 0 or (timeout is not None and timeout < 0):
            self._saw(ready)
            return ready
        reason = self.blocker()
        if reason is None and timeout is not None:
            self._now += timeout
            self.jumps += 1
            self.jumped += timeout
            return []
        # Something real is under way, or nothing at all is scheduled: wait for
        # real and let the clock follow the real time waited.
        wait = timeout
        if reason == "recent I/O (idle_grace)":
            remaining = self.idle_grace - (time.perf_counter() - self._last_io)
            wait = max(0.0, remaining) if wait is None else min(wait, max(0.0, remaining))
        started = time.perf_counter()
        ready = self._original_select(wait)
        waited = time.perf_counter() - started
        if not ready and wait is not None and wait == timeout:
            self._now += wait
        else:
            self._now += min(waited, wait) if wait is not None else waited
        self._saw(ready)
        return ready

    def _saw(self, ready: list[tuple[selectors.SelectorKey, int]]) -> None:
        if not ready:
            return
        self._last_io = time.perf_counter()
        for key, mask in ready:
            if not mask & selectors.EVENT_READ:
                continue
            reader = key.data[0] if isinstance(key.data, tuple) else None
            owner = getattr(getattr(reader, "_callback", None), "__self__", None)
            if owner is not None and getattr(owner, _AWAITING, False):
                setattr(owner, _AWAITING, False)

    # -- watching executors, client sockets and subprocesses ----------------------------

    def _run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        original = self._saved_attr("run_in_executor")
        future = original(executor, func, *args)
        if isinstance(future, asyncio.Future):
            self._executor_futures.add(future)
        return future

    def _saved_attr(self, name: str) -> Any:
        saved = self._saved.get(name, _MISSING)
        if saved is not _MISSING:
            return saved
        return getattr(type(self.loop), name).__get__(self.loop)

    def _make_socket_transport(self, *args: Any, **kwargs: Any) -> Any:
        transport = self._saved_attr("_make_socket_transport")(*args, **kwargs)
        self._watch(transport)
        return transport

    def _watch(self, transport: Any) -> None:
        """Mark a client transport as awaiting a reply whenever something is written to it.

        Server-side transports (accepted connections) are left alone: after
        answering, a server does not wait for anything in particular.
        """
        if transport in self._watched or getattr(transport, "_server", None) is not None:
            return
        _watch_writes(transport)
        self._watched.add(transport)

    def _unwatch_all(self) -> None:
        for transport in list(self._watched):
            for name in ("write", "writelines"):
                vars(transport).pop(name, None)
            vars(transport).pop(_AWAITING, None)
        self._watched = weakref.WeakSet()

    async def _make_subprocess_transport(self, *args: Any, **kwargs: Any) -> Any:
        transport = await self._saved_attr("_make_subprocess_transport")(*args, **kwargs)
        self._subprocesses.add(transport)
        return transport


_MISSING: Any = object()


class _OffsetTime:
    """A loop clock that runs in real time from where virtual time left it."""

    def __init__(self, base: Callable[[], float], offset: float) -> None:
        self.base = base
        self.offset = offset

    def __call__(self) -> float:
        return self.base() + self.offset


def _reader_owner(key: selectors.SelectorKey) -> Any:
    reader = key.data[0] if isinstance(key.data, tuple) else None
    return getattr(getattr(reader, "_callback", None), "__self__", None)


def _watch_writes(transport: Any) -> None:
    """Set the transport's awaiting-reply flag on every write (TLS writes reach it too)."""
    write = transport.write
    writelines = transport.writelines

    def watched_write(data: Any) -> None:
        if data:
            setattr(transport, _AWAITING, True)
        write(data)

    def watched_writelines(lines: Any) -> None:
        setattr(transport, _AWAITING, True)
        writelines(lines)

    transport.write = watched_write
    transport.writelines = watched_writelines


def new_virtual_time_loop(*, idle_grace: float = 0.0) -> asyncio.AbstractEventLoop:
    """Create a new event loop that runs on virtual time for its whole life.

    Pass it where a loop factory is taken: ``asyncio.Runner(loop_factory=...)``,
    ``asyncio.run(main(), loop_factory=...)`` (Python 3.12+), or
    ``anyio.run(main, backend_options={"loop_factory": new_virtual_time_loop})``.
    """
    loop = asyncio.SelectorEventLoop()
    VirtualClock(loop, idle_grace=idle_grace).activate()
    return loop


def current_clock(loop: asyncio.AbstractEventLoop | None = None) -> VirtualClock | None:
    """Return the virtual clock driving ``loop`` (the running loop by default), or None."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
    clock = getattr(loop, _ATTR, None)
    return clock if isinstance(clock, VirtualClock) and clock.active else None


@contextlib.asynccontextmanager
async def virtual_time(
    *, deadline: float | None = None, idle_grace: float = 0.0
) -> AsyncIterator[VirtualClock]:
    """Run the block on virtual time; with ``deadline``, fail once that much virtual time passed.

    On the deadline the block is cancelled and :class:`VirtualDeadlineError`
    is raised, showing where every task was waiting at that moment.
    """
    loop = asyncio.get_running_loop()
    existing = current_clock(loop)
    clock = existing if existing is not None else VirtualClock(loop, idle_grace=idle_grace)
    owned = existing is None
    if owned:
        clock.activate()
    task = asyncio.current_task()
    expired: list[str] = []
    handle: asyncio.TimerHandle | None = None

    def on_deadline() -> None:
        expired.append(dump_tasks(loop))
        if task is not None:
            task.cancel(msg="sqlsandbox virtual deadline")

    if deadline is not None:
        handle = loop.call_at(clock.time() + deadline, on_deadline)
    try:
        yield clock
    except asyncio.CancelledError:
        if expired and task is not None and task.uncancel() == 0:
            raise VirtualDeadlineError(
                f"the virtual deadline of {deadline:g} s passed (virtual clock advanced "
                f"{clock.elapsed:g} s); raise it with @pytest.mark.virtual_time(deadline=...) "
                f"or find what keeps waiting:\n{expired[0]}"
            ) from None
        raise
    finally:
        if handle is not None:
            handle.cancel()
        if owned:
            clock.deactivate()
