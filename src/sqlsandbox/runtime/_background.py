"""Helpers for the usual background-task patterns, without hooks in production code.

- :func:`run_iterations` / :func:`run_once`: run a periodic task
  (``while True: work(); await asyncio.sleep(interval)``) until it goes to
  sleep for the n-th time, then stop it there; no ``run_once`` flag needed.
- :func:`cancel_and_wait`: cancel a task and wait for it, with a bound.
- :func:`crash_task` and :func:`assert_restarted`: make a supervised task
  fail at its current ``await`` and check that its supervisor starts it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
from asyncio import futures as _futures
from collections.abc import Callable, Coroutine
from typing import Any

from .._exceptions import StuckTaskError, WaitTimeoutError
from ._tasks import await_chain, coroutine_names, describe_task, task_tracker

__all__ = [
    "Iterations",
    "assert_restarted",
    "cancel_and_wait",
    "crash_task",
    "run_iterations",
    "run_once",
]

_MISSING: Any = object()


@dataclasses.dataclass(frozen=True)
class Iterations:
    """What :func:`run_iterations` saw."""

    #: Iterations completed (sleeps reached).
    count: int
    #: The delay of every sleep the task asked for, in order.
    sleeps: tuple[float, ...]
    #: True when the task returned by itself before its last iteration.
    finished: bool
    #: The task's return value when it finished by itself.
    result: Any = None


async def cancel_and_wait(
    task: asyncio.Future[Any],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the issue's API: a loop-clock bound, virtual-time aware
) -> None:
    """Cancel ``task`` and wait until it has ended, at most ``timeout`` seconds of loop time.

    Returns normally when the task ended (cancelled or not); re-raises an
    exception other than cancellation that the task ended with; raises
    :class:`StuckTaskError` with its await chain if it is still running.
    If the caller itself is cancelled meanwhile, that cancellation propagates.
    """
    if task.done():
        _reraise_failure(task)
        return
    task.cancel(msg="cancelled by sqlsandbox.runtime.cancel_and_wait")
    done, _pending = await asyncio.wait({task}, timeout=timeout)
    if not done:
        raise StuckTaskError(
            f"{describe_task(task)} was cancelled but still runs after {timeout:g} s; "
            "it probably catches CancelledError and keeps going. It waits here:\n"
            + await_chain(task)
        )
    _reraise_failure(task)


def _reraise_failure(task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        raise error


def _is_sleep(callback: Callable[..., Any]) -> bool:
    return callback is getattr(_futures, "_set_result_unless_cancelled", None)


async def run_iterations(
    target: Callable[[], Coroutine[Any, Any, Any]] | Coroutine[Any, Any, Any],
    iterations: int = 1,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the issue's API: a loop-clock bound, virtual-time aware
) -> Iterations:
    """Run a periodic coroutine until its ``iterations``-th sleep, then stop it there.

    Sleeps before that one return at once (whatever their delay), so a loop
    that sleeps first and works after needs ``iterations=2`` to do its work once.
    The task is cancelled at the sleep, so its ``finally`` blocks run. A crash
    inside an iteration propagates. Sleeps are ``asyncio.sleep`` (and what
    calls it: ``anyio.sleep``); a loop waiting with ``wait_for(event.wait(), t)``
    is stopped with :func:`cancel_and_wait` instead.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    loop = asyncio.get_running_loop()
    coro = target() if callable(target) else target
    sleeps: list[float] = []
    reached = loop.create_future()
    task: asyncio.Task[Any] | None = None
    saved = vars(loop).get("call_later", _MISSING)
    call_later = loop.call_later

    def patched(delay: float, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if task is None or asyncio.current_task() is not task or not _is_sleep(callback):
            return call_later(delay, callback, *args, **kwargs)
        sleeps.append(delay)
        if len(sleeps) >= iterations:
            if not reached.done():
                reached.set_result(None)
            task.cancel(msg="sqlsandbox.run_iterations: iteration done")
            return call_later(delay, callback, *args, **kwargs)
        return call_later(0, callback, *args, **kwargs)

    loop.call_later = patched  # type: ignore[method-assign,assignment]
    try:
        task = asyncio.ensure_future(coro)
        await asyncio.wait({task, reached}, timeout=timeout, return_when="FIRST_COMPLETED")
        if not task.done() and not reached.done():
            chain = await_chain(task)
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
            raise StuckTaskError(
                f"the periodic task did not reach sleep #{iterations} within {timeout:g} s "
                f"of loop time (it slept {len(sleeps)} time(s)); it waits here:\n{chain}\n"
                "Fix: if that wait never ends, make what it waits for happen (or give it a "
                "timeout); if an iteration is only slow, raise timeout=. run_iterations counts "
                "asyncio.sleep calls: a loop that waits with wait_for(event.wait(), t) is "
                "stopped with cancel_and_wait() instead."
            )
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            raise StuckTaskError(
                f"the periodic task ignored cancellation at its sleep #{iterations} and still "
                f"runs after {timeout:g} s; it waits here:\n{await_chain(task)}\n"
                "Fix: let asyncio.CancelledError through in that code (catch Exception, not "
                "BaseException, or re-raise CancelledError after cleaning up)."
            )
    finally:
        if saved is _MISSING:
            vars(loop).pop("call_later", None)
        else:
            loop.call_later = saved  # type: ignore[method-assign]
        if not reached.done():
            reached.cancel()
    if task.cancelled():
        return Iterations(count=len(sleeps), sleeps=tuple(sleeps), finished=False)
    error = task.exception()
    if error is not None:
        raise error
    return Iterations(count=len(sleeps), sleeps=tuple(sleeps), finished=True, result=task.result())


async def run_once(
    target: Callable[[], Coroutine[Any, Any, Any]] | Coroutine[Any, Any, Any],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the issue's API: a loop-clock bound, virtual-time aware
) -> Iterations:
    """Run a periodic coroutine for exactly one iteration: until its first sleep."""
    return await run_iterations(target, 1, timeout=timeout)


def crash_task(task: asyncio.Task[Any], error: BaseException | None = None) -> None:
    """Make ``task`` raise ``error`` at the ``await`` where it is suspended.

    As if what it awaited had failed: the task's own ``except``/``finally``
    and its supervisor see a real crash, not a cancellation.
    """
    error = error if error is not None else RuntimeError("crashed by sqlsandbox.crash_task")
    waiter = getattr(task, "_fut_waiter", None)
    if task.done():
        raise ValueError(f"{describe_task(task)} has already finished; nothing to crash")
    if waiter is None or waiter.done():
        raise ValueError(
            f"{describe_task(task)} is not suspended on a future right now (it is about "
            "to run); let it reach an await first, e.g. with await asyncio.sleep(0)"
        )
    if isinstance(waiter, asyncio.Task):
        raise ValueError(
            f"{describe_task(task)} is waiting for {describe_task(waiter)}; crash that task instead"
        )
    waiter.set_exception(error)


def _task_matches(task: asyncio.Future[Any], match: str) -> bool:
    if not isinstance(task, asyncio.Task):
        return False
    qualname, full = coroutine_names(task)
    return any(fnmatch.fnmatchcase(name, match) for name in (task.get_name(), qualname, full))


async def assert_restarted(
    match: str,
    *,
    error: BaseException | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - the issue's API: a loop-clock bound, virtual-time aware
) -> asyncio.Task[Any]:
    """Crash the running task named (or running a coroutine named) ``match``; expect a new one.

    ``match`` is a task name, a coroutine qualified name, or ``module:name``
    (shell-style wildcards allowed). Returns the restarted task once it has
    run to its first ``await``. Raises :class:`WaitTimeoutError` when the
    supervisor did not start a matching task within ``timeout`` (loop clock).
    """
    loop = asyncio.get_running_loop()
    tracker = task_tracker(loop)
    current = asyncio.current_task()
    running = [
        task
        for task in asyncio.all_tasks(loop)
        if task is not current and not task.done() and _task_matches(task, match)
    ]
    if len(running) != 1:
        names = ", ".join(describe_task(task) for task in running) or "none"
        raise ValueError(
            f"assert_restarted({match!r}) needs exactly one running matching task, found "
            f"{len(running)}: {names}. Name the task (asyncio.create_task(..., name=...)) "
            "or pass a more precise coroutine name."
        )
    victim = running[0]
    started: asyncio.Future[asyncio.Task[Any]] = loop.create_future()

    def on_new_task(task: asyncio.Future[Any]) -> None:
        if isinstance(task, asyncio.Task) and _task_matches(task, match) and not started.done():
            started.set_result(task)

    with tracker.listening(on_new_task, deferred=True):
        crash_task(victim, error)
        try:
            new_task = await asyncio.wait_for(asyncio.shield(started), timeout)
        except TimeoutError:
            outcome = "is still running" if not victim.done() else "ended"
            raise WaitTimeoutError(
                f"{describe_task(victim)} was crashed and {outcome}, but no new task matching "
                f"{match!r} started within {timeout:g} s of loop time: its supervisor did "
                "not restart it."
            ) from None
    await asyncio.sleep(0)  # let the restarted task run to its first await
    return new_task
