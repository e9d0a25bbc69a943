"""Is a process of this host still the one that registered? Start times, without psutil on Linux.

The registry records each owner's pid with its start time, so a pid reused
by another program is told apart. On Linux both facts come from ``/proc``
with the arithmetic psutil uses (so values written by either agree); every
run pays for this at start, and importing psutil costs more than the answer.
Elsewhere psutil answers.
"""

from __future__ import annotations

import os
import sys

__all__ = ["process_state", "start_time"]

_PROC = "/proc"


def _proc_stat(pid: int) -> list[str] | None:
    """Return the fields of ``/proc/<pid>/stat`` after the command name, or None if gone."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces and ")".
    return data[data.rindex(b")") + 2 :].decode().split()


def _boot_time() -> float:
    with open(f"{_PROC}/stat", "rb") as handle:
        for line in handle:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise RuntimeError(f"no btime line in {_PROC}/stat")


def _linux() -> bool:
    return sys.platform.startswith("linux") and os.path.isdir(f"{_PROC}/self")


def start_time(pid: int) -> float | None:
    """Return when process *pid* started (epoch seconds), or None if there is none."""
    if _linux():
        fields = _proc_stat(pid)
        if fields is None:
            return None
        # Field 22 of stat(5), "starttime", in clock ticks since boot.
        return float(fields[19]) / os.sysconf("SC_CLK_TCK") + _boot_time()
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:
        return None


def process_state(pid: int) -> str:
    """Return ``"running"``, ``"zombie"``, ``"gone"`` or ``"unknown"`` (not ours to ask)."""
    if _linux():
        fields = _proc_stat(pid)
        if fields is None:
            return "gone"
        return "zombie" if fields[0] in ("Z", "X", "x") else "running"
    import psutil

    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return "zombie"
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return "gone"
    except psutil.AccessDenied:
        return "unknown"
    return "running"
