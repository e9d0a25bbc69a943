"""Find what a test left behind: pending tasks, running threads, unreturned resources.

Tasks: those created while a :class:`~._tasks.TaskTracker` watched and still
pending after a few loop iterations of grace. Threads: those started during
the test and still alive after a grace period with backoff, as goleak does
(waiting is a ``join`` with a timeout, so a thread that ends is noticed at
once). Other resources (sandbox connections not given back) come from checks
registered with :func:`add_leak_check`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from ._tasks import await_chain, coroutine_names, describe_task, format_creation_site

__all__ = [
    "DEFAULT_THREAD_ALLOWLIST",
    "LeakMode",
    "LeakReport",
    "add_leak_check",
    "cancel_and_collect",
    "find_task_leaks",
    "find_thread_leaks",
    "run_leak_checks",
]

LeakMode = Literal["fail", "cancel", "warn", "off"]

#: Threads that outlive tests on purpose: idle executor and anyio workers,
#: pytest-timeout's timer, and sqlsandbox's own output readers.
DEFAULT_THREAD_ALLOWLIST = (
    "asyncio_*",
    "AnyIO worker thread",
    "pytest_timeout *",
    "sqlsandbox-*",
)


def _matches(names: Iterable[str], allowlist: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in allowlist)


def task_allowed(task: asyncio.Future[Any], allowlist: Sequence[str]) -> bool:
    """Whether the allowlist names this task (by task name, coroutine name or module:name)."""
    if not allowlist or not isinstance(task, asyncio.Task):
        return False
    qualname, full = coroutine_names(task)
    return _matches((task.get_name(), qualname, full), allowlist)


@dataclasses.dataclass
class LeakReport:
    """What one test left behind."""

    where: str
    tasks: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)
    threads: list[threading.Thread] = dataclasses.field(default_factory=list)
    resources: list[str] = dataclasses.field(default_factory=list)
    task_text: dict[int, str] = dataclasses.field(default_factory=dict)
    thread_text: dict[int, str] = dataclasses.field(default_factory=dict)
    #: Tasks that ignored cancellation within the bound.
    stuck: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.threads or self.resources)

    def snapshot(self) -> None:
        """Capture where each leaked task waits and each thread runs, before anything changes."""
        for task in self.tasks:
            self.task_text[id(task)] = (
                f"  {describe_task(task)}\n"
                + await_chain(task, indent="      ")
                + format_creation_site(task, indent="      ")
            )
        frames = sys._current_frames()
        for thread in self.threads:
            frame = frames.get(thread.ident or -1)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
            stack = "".join("      " + line for line in stack.splitlines(True))
            self.thread_text[id(thread)] = (
                f"  Thread {thread.name!r} (started, never joined)\n{stack}"
            )

    def format(self, *, action: str) -> str:
        """Render the report: what leaked, where it waits and was created, and the fix."""
        lines = [f"{self.where} left things running ({action}):\n"]
        if self.tasks:
            lines.append(f"{len(self.tasks)} pending task(s):\n")
            lines.extend(
                self.task_text.get(id(task), f"  {describe_task(task)}\n") for task in self.tasks
            )
        if self.stuck:
            names = ", ".join(repr(task.get_name()) for task in self.stuck)
            lines.append(f"these ignored cancellation and still run: {names}\n")
        if self.threads:
            lines.append(f"{len(self.threads)} thread(s) still alive:\n")
            lines.extend(
                self.thread_text.get(id(thread), f"  Thread {thread.name!r}\n")
                for thread in self.threads
            )
        if self.resources:
            lines.append("resources not given back:\n")
            lines.extend(f"  {item}\n" for item in self.resources)
        lines.append(
            "Fix: await or cancel what you start (asyncio.TaskGroup, "
            "sqlsandbox.runtime.cancel_and_wait), join threads; or allow it with "
            "leak_allowlist = [NAME] (--sqlsandbox-leak-allowlist), "
            '@pytest.mark.sandbox_leaks(allow=[NAME]), or leaks = "warn" / "off".\n'
        )
        return "".join(lines)


async def find_task_leaks(
    candidates: Iterable[asyncio.Future[Any]],
    *,
    allowlist: Sequence[str] = (),
    grace_iterations: int = 20,
) -> list[asyncio.Task[Any]]:
    """Return the candidate tasks still pending after a few loop iterations of grace.

    Tasks about to finish (a done callback away, a cancellation being
    delivered) get those iterations to do so; nothing sleeps on a clock.
    """
    current = asyncio.current_task()
    pending: list[asyncio.Task[Any]] = []
    for _ in range(grace_iterations):
        pending = [
            task
            for task in candidates
            if isinstance(task, asyncio.Task)
            and task is not current
            and not task.done()
            and not task_allowed(task, allowlist)
        ]
        if not pending:
            return []
        await asyncio.sleep(0)
    return sorted(pending, key=lambda task: task.get_name())


async def cancel_and_collect(
    tasks: Sequence[asyncio.Task[Any]],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the issue's API: a loop-clock bound, virtual-time aware
) -> list[asyncio.Task[Any]]:
    """Cancel tasks and wait (bounded) until they end; return those that did not."""
    if not tasks:
        return []
    for task in tasks:
        task.cancel(msg="cancelled by sqlsandbox: leaked by the test")
    _done, still = await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a leak report must not also log "never retrieved"
    return sorted(still, key=lambda task: task.get_name())


def find_thread_leaks(
    before: Iterable[threading.Thread],
    *,
    allowlist: Sequence[str] = (),
    grace: float = 1.0,
) -> list[threading.Thread]:
    """Return threads started since ``before`` that are still alive after ``grace`` seconds.

    Joins each candidate with the time left, so a thread that is finishing is
    waited for exactly as long as it needs, never longer than ``grace`` in total.
    """
    known = set(before)  # thread objects, not idents: an ident is reused after a thread ends
    patterns = tuple(allowlist) + DEFAULT_THREAD_ALLOWLIST
    current = threading.current_thread()

    def leaked() -> list[threading.Thread]:
        return [
            thread
            for thread in threading.enumerate()
            if thread not in known
            and thread is not current
            and thread.is_alive()
            and not _matches((thread.name,), patterns)
        ]

    deadline = time.monotonic() + grace
    candidates = leaked()
    for thread in candidates:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        thread.join(remaining)
    return sorted(leaked(), key=lambda thread: thread.name)


_leak_checks: dict[str, Callable[[], Sequence[str]]] = {}


def add_leak_check(name: str, check: Callable[[], Sequence[str]]) -> Callable[[], None]:
    """Register a check run after each test; it returns descriptions of what was not given back.

    Returns a function that unregisters it. The database layers register one
    for sandbox connections that were checked out and never checked in.
    """
    _leak_checks[name] = check

    def remove() -> None:
        if _leak_checks.get(name) is check:
            del _leak_checks[name]

    return remove


def run_leak_checks() -> list[str]:
    """Run every registered resource check and return what they found, prefixed by name."""
    found: list[str] = []
    for name, check in list(_leak_checks.items()):
        found.extend(f"{name}: {item}" for item in check())
    return found
