"""Processes of the embedded PostgreSQL: is one alive, is it a postmaster, wait for exits.

Waiting is event-driven where the OS allows it (a pidfd becomes readable when
its process exits), never a polling sleep.
"""

from __future__ import annotations

import contextlib
import os
import select
import time

import psutil

__all__ = ["alive", "is_postmaster", "postgres_processes_in", "wait_exit"]

_POSTGRES_NAMES = frozenset({"postgres", "postmaster"})


def alive(pid: int, create_time: float | None = None) -> bool:
    """Whether *pid* runs (not a zombie), and is the same process if *create_time* is given."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def is_postmaster(pid: int) -> bool:
    """Whether *pid* is a live PostgreSQL server process."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.name() in _POSTGRES_NAMES
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def postgres_processes_in(data_dir: str) -> list[int]:
    """Return the pids of PostgreSQL processes whose working directory is *data_dir*."""
    found = []
    for proc in psutil.process_iter(["name", "cwd"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] in _POSTGRES_NAMES and proc.info["cwd"] == data_dir:
                found.append(proc.pid)
    return found


def wait_exit(pids: list[int], timeout: float) -> list[int]:
    """Wait until every process in *pids* has exited; return those still running."""
    if not hasattr(os, "pidfd_open"):
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(pid))
        _, still = psutil.wait_procs(procs, timeout=timeout)
        return [p.pid for p in still]
    # A pidfd becomes readable when its process exits: an event, not polling.
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(pid)] = pid
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    try:
        while fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
    finally:
        for fd in fds:
            os.close(fd)
    return [pid for pid in fds.values() if alive(pid)]
