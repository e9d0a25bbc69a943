"""Show where a hung test waits: every task's await chain and every thread's stack."""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from typing import Any

from ._tasks import await_chain, describe_task, format_creation_site

__all__ = ["dump_all", "dump_tasks", "dump_threads"]


def _all_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    # all_tasks iterates a WeakSet that other threads may change under us; a
    # dump taken from a signal handler or a watchdog thread retries instead of failing.
    for _ in range(5):
        try:
            return sorted(asyncio.all_tasks(loop), key=lambda task: task.get_name())
        except RuntimeError:
            continue
    return []


def dump_tasks(loop: asyncio.AbstractEventLoop | None = None, *, title: str = "") -> str:
    """Format the await chain and creation site of every pending task of ``loop``."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return "(no running event loop: no tasks to show)\n"
    tasks = _all_tasks(loop)
    head = title or f"{len(tasks)} pending asyncio task(s)"
    parts = [f"--- {head} ---\n"]
    if not tasks:
        parts.append("    (none)\n")
    for task in tasks:
        parts.append(f"{describe_task(task)}\n")
        parts.append(await_chain(task))
        parts.append(format_creation_site(task))
    return "".join(parts)


def dump_threads(*, skip_current: bool = False) -> str:
    """Format the stack of every thread, named, the main thread first."""
    frames = sys._current_frames()
    threads = {thread.ident: thread for thread in threading.enumerate()}
    current = threading.get_ident()
    parts = [f"--- {len(frames)} thread(s) ---\n"]
    for ident, frame in sorted(
        frames.items(), key=lambda item: item[0] != threading.main_thread().ident
    ):
        if skip_current and ident == current:
            continue
        thread = threads.get(ident)
        name = thread.name if thread is not None else f"thread {ident}"
        daemon = " (daemon)" if thread is not None and thread.daemon else ""
        here = " (this thread)" if ident == current else ""
        parts.append(f'Thread "{name}"{daemon}{here}:\n')
        parts.extend(
            "  " + line for line in "".join(traceback.format_stack(frame)).splitlines(True)
        )
    return "".join(parts)


def dump_all(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Format every pending task of ``loop`` and every thread's stack."""
    return dump_tasks(loop) + dump_threads()
