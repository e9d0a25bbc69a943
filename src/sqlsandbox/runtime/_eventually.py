"""Wait until a condition holds, on the loop's clock, without guessing a sleep."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from .._exceptions import WaitTimeoutError
from ._probe import Probe, change_future

__all__ = ["eventually"]

T = TypeVar("T")

Wakeup = asyncio.Event | asyncio.Condition | Probe | Callable[[], Awaitable[Any]]


def _wake_futures(
    on: Wakeup | Iterable[Wakeup] | None, loop: asyncio.AbstractEventLoop
) -> list[asyncio.Future[Any]]:
    """Start one waiter per source; any of them finishing means "check again"."""
    sources: list[Any]
    if on is None:
        sources = []
    elif isinstance(on, asyncio.Event | asyncio.Condition | Probe) or callable(on):
        sources = [on]
    else:
        sources = list(on)
    futures: list[asyncio.Future[Any]] = [change_future(loop)]
    for source in sources:
        if isinstance(source, Probe):
            continue  # probe messages already resolve change_future
        if isinstance(source, asyncio.Event):
            # A set event would wake us at once, forever: then the backoff paces the checks.
            if not source.is_set():
                futures.append(asyncio.ensure_future(source.wait()))
        elif isinstance(source, asyncio.Condition):
            futures.append(asyncio.ensure_future(_wait_condition(source)))
        elif callable(source):
            futures.append(asyncio.ensure_future(source()))
        else:
            raise TypeError(
                f"eventually(on=...) takes asyncio.Event, asyncio.Condition, Probe, or a "
                f"function returning an awaitable, not {type(source).__name__}"
            )
    return futures


async def _wait_condition(condition: asyncio.Condition) -> None:
    async with condition:
        await condition.wait()


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the issue's API: a loop-clock bound, virtual-time aware
    on: Wakeup | Iterable[Wakeup] | None = None,
    interval: float = 0.005,
    max_interval: float = 0.25,
) -> T:
    """Re-run ``check`` until it passes, then return its result.

    ``check`` is a predicate (passes when it returns something true) or an
    assertion block (passes when it returns ``None`` without raising
    ``AssertionError``); it may be async. Between attempts it waits for a
    wake-up from ``on`` (an ``asyncio.Event``, ``asyncio.Condition``,
    :class:`Probe`, or a function returning an awaitable) or for any Probe
    message, and otherwise polls with a backoff from ``interval`` to
    ``max_interval``. Timing uses the loop's clock, so under virtual time the
    timeout is virtual too. Other exceptions than ``AssertionError`` propagate
    at once: they are bugs, not "not yet".

    Raises :class:`WaitTimeoutError` (an ``AssertionError``) after ``timeout``
    seconds, chained to the last assertion that failed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = interval
    attempts = 0
    last_error: AssertionError | None = None
    last_result: Any = None
    while True:
        attempts += 1
        try:
            result: Any = check()
            if inspect.isawaitable(result):
                result = await result
        except AssertionError as error:
            last_error = error
        else:
            if result is None or result:
                return result  # type: ignore[return-value]
            last_error = None
            last_result = result
        remaining = deadline - loop.time()
        if remaining <= 0:
            name = getattr(check, "__qualname__", repr(check))
            detail = (
                f"last failure: {type(last_error).__name__}: {last_error}"
                if last_error is not None
                else f"last result: {last_result!r}"
            )
            raise WaitTimeoutError(
                f"{name} did not pass within {timeout:g} s of loop time "
                f"({attempts} attempt(s)); {detail}. Raise timeout= if the work is slow, "
                "or pass on=<Event/Probe> so the check runs when the state changes."
            ) from last_error
        futures = _wake_futures(on, loop)
        try:
            await asyncio.wait(
                futures, timeout=min(delay, remaining), return_when="FIRST_COMPLETED"
            )
        finally:
            for future in futures:
                future.cancel()
        delay = min(delay * 2, max_interval)
