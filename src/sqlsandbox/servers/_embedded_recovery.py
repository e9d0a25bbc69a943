"""Crash recovery: tell a running server from what a dead or hung one left behind.

Looked at under the lock, before every start and stop, through
``data/postmaster.pid``:

- no file: nothing runs; a socket directory a crashed run left is removed;
- a postmaster that answers the handshake: it is the server, reused;
- a postmaster that does not answer within the ping timeout (hung,
  SIGSTOPped): stopped with ``pg_ctl stop -m immediate``, killed if that
  does not work;
- no postmaster behind the file (``kill -9``, a reboot): its leftover
  backends are waited for (they hold its shared memory), then the stale
  ``postmaster.pid`` and socket directories are removed.
"""

from __future__ import annotations

import contextlib
import os
import signal

from ._embedded_cluster import Cluster
from ._embedded_paths import remove_socket_dir
from ._embedded_postmaster import Postmaster, ping, read_pid_file
from ._embedded_processes import is_postmaster, postgres_processes_in, wait_exit

__all__ = ["probe"]


def probe(
    cluster: Cluster,
    *,
    state_socket_dir: str | None,
    ping_timeout: float,
    kill_timeout: int,
) -> Postmaster | None:
    """Return the running server if it answers; clean up what a dead or hung one left.

    *state_socket_dir* is the socket directory the state file remembers;
    *kill_timeout* is what ``pg_ctl stop -m immediate`` gets before a hung
    server is killed.
    """
    found = read_pid_file(cluster.files)
    if found is None:
        remove_socket_dir(state_socket_dir)
        return None
    if found.pid and is_postmaster(found.pid):
        if ping(found.port, ping_timeout):
            return found
        _kill_hung(cluster, found.pid, kill_timeout)
    _clear_stale(cluster, found, state_socket_dir)
    return None


def _kill_hung(cluster: Cluster, pid: int, kill_timeout: int) -> None:
    cluster.pg_ctl(["stop", "-m", "immediate", "-w", "-t", str(kill_timeout)])
    if wait_exit([pid], 0):
        # pg_ctl's SIGQUIT cannot reach a stopped (SIGSTOP) or wedged process.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_exit([pid], 30)


def _clear_stale(cluster: Cluster, found: Postmaster, state_socket_dir: str | None) -> None:
    # Children of a killed postmaster exit once they notice; until then they
    # hold its shared memory and a new postmaster would refuse to start.
    leftovers = postgres_processes_in(str(cluster.files.data_dir))
    for pid in wait_exit(leftovers, 10):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cluster.files.pid_file.unlink(missing_ok=True)
    remove_socket_dir(found.socket_dir)
    remove_socket_dir(state_socket_dir)
