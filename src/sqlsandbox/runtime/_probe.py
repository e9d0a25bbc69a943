"""A mailbox for tests: collect messages, then wait for the one you expect.

In the spirit of ExUnit's ``assert_receive``: hand ``probe`` to the code under
test as a callback (it is callable, from any thread), then
``await probe.received(match, timeout=...)``. Every message also wakes
:func:`~._eventually.eventually` waiters, so a check that depends on what a
probe collects is re-run the moment something arrives.
"""

from __future__ import annotations

import asyncio
import collections
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .._exceptions import WaitTimeoutError

__all__ = ["Probe", "describe_match", "matches"]

_NOTHING: Any = object()

# Futures of eventually() waiters, per loop: resolved by any probe message.
_change_waiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[asyncio.Future[None]]] = (
    weakref.WeakKeyDictionary()
)
_change_lock = threading.Lock()


def change_future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """Return a future resolved when the next probe message arrives."""
    future: asyncio.Future[None] = loop.create_future()
    with _change_lock:
        _change_waiters.setdefault(loop, set()).add(future)
    return future


def _wake(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def notify_change() -> None:
    """Wake every eventually() and Probe waiter, on whatever loop and thread they wait."""
    with _change_lock:
        waiting = [(loop, futures) for loop, futures in _change_waiters.items() if futures]
        for loop, _futures in waiting:
            _change_waiters[loop] = set()
    for loop, futures in waiting:
        for future in futures:
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                _wake(future)
            else:
                loop.call_soon_threadsafe(_wake, future)


def matches(match: Any, message: Any) -> bool:
    """Whether ``message`` fits ``match``.

    ``None``: anything; a type: an instance of it; a compiled regex: found in
    ``str(message)``; a mapping: ``message`` is a mapping holding those items;
    another callable: it returns true for the message; else: equality.
    """
    if match is None:
        return True
    if isinstance(match, type):
        return isinstance(message, match)
    if isinstance(match, re.Pattern):
        return match.search(str(message)) is not None
    if isinstance(match, Mapping):
        return isinstance(message, Mapping) and all(
            key in message and message[key] == value for key, value in match.items()
        )
    if callable(match):
        return bool(match(message))
    return bool(message == match)


def describe_match(match: Any) -> str:
    """Say in words what ``match`` accepts, for error messages."""
    if match is None:
        return "any message"
    if isinstance(match, type):
        return f"an instance of {match.__qualname__}"
    if isinstance(match, re.Pattern):
        return f"a message matching /{match.pattern}/"
    if isinstance(match, Mapping):
        return f"a mapping containing {dict(match)!r}"
    if callable(match):
        return f"a message for which {getattr(match, '__qualname__', match)!r} is true"
    return f"{match!r}"


class Probe:
    """Collect messages from callbacks, handlers and threads; wait for the expected one.

    ``probe(x)`` (or ``probe.put(x)``) stores ``x``; called with several
    positional arguments it stores the tuple, with keywords ``(args, kwargs)``.
    """

    def __init__(self, name: str = "probe") -> None:
        self.name = name
        self._messages: collections.deque[Any] = collections.deque()
        self._condition = threading.Condition()
        self._taken = 0

    def __repr__(self) -> str:
        return f"<Probe {self.name!r} holding {len(self)} message(s)>"

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs:
            self.put((args, kwargs))
        elif len(args) == 1:
            self.put(args[0])
        else:
            self.put(args)

    def put(self, message: Any) -> None:
        """Store a message and wake whoever waits for one (thread-safe)."""
        with self._condition:
            self._messages.append(message)
            self._condition.notify_all()
        notify_change()

    def __len__(self) -> int:
        with self._condition:
            return len(self._messages)

    @property
    def messages(self) -> list[Any]:
        """The messages not taken yet, oldest first (a copy)."""
        with self._condition:
            return list(self._messages)

    def clear(self) -> None:
        """Drop every message not taken yet."""
        with self._condition:
            self._messages.clear()

    def _take(self, match: Any) -> Any:
        with self._condition:
            for index, message in enumerate(self._messages):
                if matches(match, message):
                    del self._messages[index]
                    self._taken += 1
                    return message
        return _NOTHING

    def _timeout_error(self, match: Any, timeout: float, clock: str) -> WaitTimeoutError:
        held = self.messages
        shown = ", ".join(repr(message) for message in held[:10])
        more = f" and {len(held) - 10} more" if len(held) > 10 else ""
        return WaitTimeoutError(
            f"{self.name} expected {describe_match(match)}, none came within {timeout:g} s "
            f"({clock}); "
            f"it holds {len(held)} other message(s)"
            + (f": {shown}{more}" if held else "")
            + ". Check that the code under test calls the probe, or raise timeout=."
        )

    def received_nowait(self, match: Any = None) -> Any:
        """Take and return the oldest message matching ``match``; fail if there is none yet."""
        message = self._take(match)
        if message is _NOTHING:
            raise self._timeout_error(match, 0, "without waiting")
        return message

    async def received(
        self,
        match: Any = None,
        *,
        timeout: float = 1.0,  # noqa: ASYNC109 - the issue's API: a loop-clock bound, virtual-time aware
    ) -> Any:
        """Wait (on the loop's clock) for a message matching ``match``, take and return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = self._take(match)
            if message is not _NOTHING:
                return message
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._timeout_error(match, timeout, "loop clock")
            waiter = change_future(loop)
            if self._take_peek(match):
                waiter.cancel()
                continue
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                continue

    def _take_peek(self, match: Any) -> bool:
        with self._condition:
            return any(matches(match, message) for message in self._messages)

    def wait_received(self, match: Any = None, *, timeout: float = 1.0) -> Any:
        """Block this thread until a matching message arrives (for sync tests); take it."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                message = self._take(match)
                if message is not _NOTHING:
                    return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error(match, timeout, "real time")
                self._condition.wait(remaining)

    def assert_nothing_received(self, match: Any = None) -> None:
        """Fail if a message matching ``match`` is waiting in the mailbox right now."""
        with self._condition:
            unexpected = [message for message in self._messages if matches(match, message)]
        if unexpected:
            raise WaitTimeoutError(
                f"{self.name} expected nothing matching ({describe_match(match)}) but holds "
                f"{len(unexpected)}: " + ", ".join(repr(message) for message in unexpected[:10])
            )

    def count(self, match: Any = None) -> int:
        """How many waiting messages match ``match``."""
        with self._condition:
            return sum(1 for message in self._messages if matches(match, message))

    def callback(self, transform: Callable[..., Any]) -> Callable[..., None]:
        """Return a callback that stores ``transform(*args, **kwargs)``."""

        def store(*args: Any, **kwargs: Any) -> None:
            self.put(transform(*args, **kwargs))

        return store
