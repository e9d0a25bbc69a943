"""Know where tasks come from and where they wait.

A wrapping task factory records, for every task created while it is
installed, a few raw ``(file, line, function)`` tuples of the creating stack
(formatting happens only when a report needs it, so recording stays cheap),
and tells listeners about new tasks (used to see a supervised task restart).
``await_chain`` walks a task's coroutine ``cr_await`` chain down to the future
it waits on, which is what a hang dump or a leak report shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import linecache
import sys
import weakref
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "TaskTracker",
    "await_chain",
    "coroutine_names",
    "creation_site",
    "describe_task",
    "format_creation_site",
    "task_tracker",
]

_Frame = tuple[str, int, str]
_SITE_DEPTH = 8

# Keyed weakly by task: a record must never keep a finished task alive.
_creation_sites: weakref.WeakKeyDictionary[asyncio.Future[Any], tuple[_Frame, ...]] = (
    weakref.WeakKeyDictionary()
)
# Internal frames that say nothing about who created a task.
_SKIP_FILES = ("asyncio/tasks.py", "asyncio/base_events.py", "asyncio/taskgroups.py")
_STOP_FILES = ("asyncio/events.py",)
# sqlsandbox's own wrappers (the test runner's async wrapper among them) are noise here.
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent).replace("\\", "/") + "/"


_KEEP, _SKIP, _STOP = 0, 1, 2
# Verdict per file name, so recording a site costs a dict lookup per frame.
_file_kind: dict[str, int] = {}


def _kind(filename: str) -> int:
    kind = _file_kind.get(filename)
    if kind is None:
        normal = filename.replace("\\", "/")
        if normal.endswith(_STOP_FILES):
            kind = _STOP  # below this is the event loop running callbacks: not the creator
        elif normal.endswith(_SKIP_FILES) or normal.startswith(_PACKAGE_DIR):
            kind = _SKIP
        else:
            kind = _KEEP
        _file_kind[filename] = kind
    return kind


def _record_site(task: asyncio.Future[Any], frame: FrameType | None) -> None:
    frames: list[_Frame] = []
    while frame is not None and len(frames) < _SITE_DEPTH:
        code = frame.f_code
        kind = _kind(code.co_filename)
        if kind == _STOP:
            break
        if kind == _KEEP:
            frames.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    _creation_sites[task] = tuple(frames)


def creation_site(task: asyncio.Future[Any]) -> tuple[_Frame, ...]:
    """Return the recorded creating stack of a task, innermost first (empty if unknown)."""
    return _creation_sites.get(task, ())


def format_creation_site(task: asyncio.Future[Any], *, indent: str = "    ") -> str:
    """Format where a task was created, innermost call first, or say it is unknown."""
    site = creation_site(task)
    if not site:
        return f"{indent}created at: unknown (created before sqlsandbox started tracking)\n"
    lines = [f"{indent}created at:\n"]
    for filename, lineno, name in site:
        lines.append(f'{indent}  File "{filename}", line {lineno}, in {name}\n')
        source = linecache.getline(filename, lineno).strip()
        if source:
            lines.append(f"{indent}    {source}\n")
    return "".join(lines)


def _coro_name(task: asyncio.Future[Any]) -> str:
    if not isinstance(task, asyncio.Task):
        return type(task).__name__
    coro = task.get_coro()
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    qualname = getattr(coro, "__qualname__", None) or getattr(code, "co_qualname", None)
    module = None
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is not None:
        module = frame.f_globals.get("__name__")
    name = str(qualname or type(coro).__name__)
    return f"{module}:{name}" if module else name


def describe_task(task: asyncio.Future[Any]) -> str:
    """Return ``Task 'name' running module:coroutine`` for a report line."""
    if isinstance(task, asyncio.Task):
        return f"Task {task.get_name()!r} running {_coro_name(task)}"
    return repr(task)


def coroutine_names(task: asyncio.Task[Any]) -> tuple[str, str]:
    """Return the task's coroutine as ``(qualname, module:qualname)`` for allowlists."""
    full = _coro_name(task)
    return full.rpartition(":")[2], full


def _frame_line(frame: FrameType, indent: str) -> str:
    code = frame.f_code
    text = f'{indent}File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}\n'
    source = linecache.getline(code.co_filename, frame.f_lineno).strip()
    if source:
        text += f"{indent}  {source}\n"
    return text


def _describe_awaited(obj: object) -> str:
    if isinstance(obj, asyncio.Task):
        return f"waiting for {describe_task(obj)}"
    if isinstance(obj, asyncio.Future):
        callbacks = getattr(obj, "_callbacks", None) or []
        owner = ""
        for entry in callbacks:
            callback = entry[0] if isinstance(entry, tuple) else entry
            owner = getattr(callback, "__qualname__", "") or ""
            if owner:
                break
        what = f" (woken by {owner})" if owner and "Task" not in owner else ""
        return f"waiting on {obj!r}{what}"
    return f"waiting on {type(obj).__name__}"


def await_chain(task: asyncio.Future[Any], *, indent: str = "    ") -> str:
    """Format where a task is suspended: each coroutine frame down to the awaited future.

    Uses ``asyncio.format_call_graph`` on Python 3.14+, and walks ``cr_await``
    (and generator/async-generator equivalents) before that.
    """
    if not isinstance(task, asyncio.Task):
        return f"{indent}{task!r}\n"
    if task.done():
        return f"{indent}(finished)\n"
    formatter = getattr(asyncio, "format_call_graph", None)
    if formatter is not None:  # pragma: no cover - Python 3.14+
        with contextlib.suppress(Exception):
            text = formatter(task)
            return "".join(f"{indent}{line}\n" for line in text.splitlines())
    lines: list[str] = []
    obj: Any = task.get_coro()
    seen = 0
    while obj is not None and seen < 64:
        seen += 1
        frame = (
            getattr(obj, "cr_frame", None)
            or getattr(obj, "gi_frame", None)
            or getattr(obj, "ag_frame", None)
        )
        if frame is not None:
            lines.append(_frame_line(frame, indent))
        nxt = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "gi_yieldfrom", None)
            or getattr(obj, "ag_await", None)
        )
        if nxt is None:
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is not None and seen == 1:
                lines.append(f"{indent}{_describe_awaited(waiter)}\n")
            break
        if isinstance(nxt, asyncio.Future):
            lines.append(f"{indent}{_describe_awaited(nxt)}\n")
            break
        obj = nxt
    if not lines:
        lines.append(f"{indent}(not started yet)\n")
    return "".join(lines)


TaskFactory = Callable[..., "asyncio.Future[Any]"]


class TaskTracker:
    """Record creation sites and new tasks of one event loop while installed.

    Installed as the loop's task factory, chaining to any factory that was
    there before, so eager task factories and user factories keep working.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._previous: Any = None
        self._installed = False
        self._listeners: list[tuple[Callable[[asyncio.Future[Any]], None], bool]] = []

    def _factory(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        if self._previous is not None:
            task: asyncio.Future[Any] = self._previous(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        # Frame 0 is this factory, 1 is loop.create_task: start at the caller of those.
        _record_site(task, sys._getframe(1))
        # loop.create_task names the task only after the factory returns: deferred
        # listeners (those that look at names) hear of it on the next iteration.
        for listener, deferred in list(self._listeners):
            if deferred:
                loop.call_soon(listener, task)
            else:
                listener(task)
        return task

    def install(self) -> None:
        """Become the loop's task factory (idempotent)."""
        if self._installed:
            return
        self._previous = self.loop.get_task_factory()
        self.loop.set_task_factory(self._factory)  # type: ignore[arg-type]
        self._installed = True

    def uninstall(self) -> None:
        """Give the previous task factory back, if nobody replaced ours meanwhile."""
        if not self._installed:
            return
        if self.loop.get_task_factory() == self._factory:
            self.loop.set_task_factory(self._previous)
        self._installed = False

    @contextlib.contextmanager
    def listening(
        self, listener: Callable[[asyncio.Future[Any]], None], *, deferred: bool = False
    ) -> Iterator[None]:
        """Call ``listener(task)`` for every task created inside the block.

        ``deferred``: call it on the next loop iteration, once the task has its name.
        """
        entry = (listener, deferred)
        self._listeners.append(entry)
        try:
            yield
        finally:
            self._listeners.remove(entry)


_trackers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TaskTracker] = (
    weakref.WeakKeyDictionary()
)


def task_tracker(loop: asyncio.AbstractEventLoop | None = None) -> TaskTracker:
    """Return the installed tracker of ``loop`` (the running loop by default)."""
    if loop is None:
        loop = asyncio.get_running_loop()
    tracker = _trackers.get(loop)
    if tracker is None:
        tracker = _trackers[loop] = TaskTracker(loop)
    tracker.install()
    return tracker
