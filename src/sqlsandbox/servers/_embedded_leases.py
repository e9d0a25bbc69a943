"""Lease bookkeeping: which processes use the shared embedded server, and ``keep``.

Every process that uses the server (each pytest-xdist worker, the main
process, a ``sqlsandbox`` command) records a lease in ``server.json`` as
``[pid, process start time]``: the start time keeps a reused pid from passing
for a holder. Holders that died are dropped whenever a lease is taken or
given back. When the last live holder gives its lease back the server stops,
unless ``keep`` was asked (``SQLSANDBOX_KEEP_SERVER=1``, ``server start
--keep``). Every function here runs under the server's file lock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil

from ._embedded_processes import alive

__all__ = [
    "KEEP_SERVER_ENV",
    "State",
    "add_holder",
    "keep_from_env",
    "live_holders",
    "read_state",
    "remove_holder",
    "set_keep",
    "write_state",
]

KEEP_SERVER_ENV = "SQLSANDBOX_KEEP_SERVER"

#: The decoded state file: pid, port, socket_dir, version, data_dir, users, keep.
State = dict[str, Any]


def keep_from_env() -> bool:
    """Whether SQLSANDBOX_KEEP_SERVER asks to keep the server after the last lease."""
    return os.environ.get(KEEP_SERVER_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def read_state(path: Path) -> State:
    """Return the state file's content; {} if it is missing or unreadable."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: Path, state: State) -> None:
    """Replace the state file atomically: readers never see half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def live_holders(state: State) -> list[list[float]]:
    """Return the lease holders of *state* whose process still runs."""
    return [u for u in state.get("users", []) if alive(u[0], u[1])]


def add_holder(state: State, *, once: bool) -> None:
    """Record a lease of this process in *state* (a second one unless *once*)."""
    me = [os.getpid(), psutil.Process().create_time()]
    users = live_holders(state)
    if not (once and any(u[0] == me[0] for u in users)):
        users.append(me)
    state["users"] = users


def remove_holder(state: State) -> bool:
    """Drop one lease of this process from *state*; return whether the server may stop.

    It may stop when no live holder is left and nobody asked to keep it.
    """
    me = os.getpid()
    users = live_holders(state)
    for i, (pid, _) in enumerate(users):
        if pid == me:
            del users[i]
            break
    state["users"] = users
    return not users and not state.get("keep")


def set_keep(state: State, keep: bool) -> None:
    """Ask to keep the server after the last lease (a keep once asked stays)."""
    state["keep"] = bool(state.get("keep")) or keep
