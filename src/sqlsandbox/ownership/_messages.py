"""Wording of ownership errors: who called, what state, every way out."""

from __future__ import annotations

import asyncio
import threading

from .._exceptions import DOCS, OwnershipError
from ._lock import running_task

__all__ = ["DOCS_PAGE", "caller_name", "ways_out"]

DOCS_PAGE = f"{DOCS}/ownership/"


def caller_name() -> str:
    """Describe the running code: ``task 'Task-3' in thread 'MainThread'``."""
    thread = threading.current_thread().name
    task = running_task()
    if task is not None:
        return f"task {task.get_name()!r} in thread {thread!r}"
    return f"thread {thread!r}"


def describe(obj: object) -> str:
    """Describe a task, thread or token given to allow()/join()."""
    if isinstance(obj, asyncio.Task):
        return f"task {obj.get_name()!r}"
    if isinstance(obj, threading.Thread):
        return f"thread {obj.name!r}"
    if isinstance(obj, str):
        return f"token {obj[:24]!r}"
    return repr(obj)


def ways_out(sandbox_name: str) -> str:
    """List every fix for code that uses the database without ownership."""
    return (
        "Fix it with one of:\n"
        "  - check out a connection in this code: sandbox.checkout() / "
        "await sandbox.acheckout() (in tests: use the `sandbox` fixture or "
        "@pytest.mark.sandbox);\n"
        "  - let this caller use the test's connection: sandbox.allow(owner, "
        "<this thread, task or token>), or `with sandbox.join(owner.token):` "
        "around its code (HTTP middleware does this with the owner header);\n"
        '  - switch to shared mode: sandbox.mode("shared", owner) or '
        '@pytest.mark.sandbox(mode="shared"), so every caller uses the owner\'s '
        "connection;\n"
        "  - run the code in the test's context: asyncio.create_task, TaskGroup, "
        "gather and asyncio.to_thread inherit the owner, while threading.Thread "
        "and loop.run_in_executor do not (wrap the function with "
        "contextvars.copy_context().run).\n"
        f"Sandbox: {sandbox_name}. See {DOCS_PAGE}#ownershiperror"
    )


def not_owner(sandbox_name: str, mode: str, owners: list[str]) -> OwnershipError:
    """Build the error for database access without ownership in manual mode."""
    who = ", ".join(repr(o) for o in owners[:5]) if owners else "none"
    return OwnershipError(
        f"Database access by {caller_name()} is not allowed: the sandbox is in "
        f"{mode} mode and this caller neither owns a connection nor was allowed to "
        f"use one (current owners: {who}).\n" + ways_out(sandbox_name)
    )
