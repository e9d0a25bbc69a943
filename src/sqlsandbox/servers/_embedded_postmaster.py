"""Start and stop the embedded PostgreSQL server (the postmaster), and talk to it.

The server is started with ``pg_ctl start -w`` and settings tuned for
throwaway test data, on 127.0.0.1 and a free port, with its unix socket in a
private directory. ``postmaster.pid`` tells where a running one listens.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import socket
import struct
from pathlib import Path

from .._exceptions import ProvisioningError
from .._urls import DatabaseURL
from ._embedded_cluster import DB_USER, PG_CTL_TIMEOUT_S, Cluster
from ._embedded_paths import ClusterFiles, new_socket_dir, remove_socket_dir
from ._embedded_processes import is_postmaster

__all__ = [
    "HOST",
    "Postmaster",
    "boot",
    "ping",
    "read_pid_file",
    "server_url",
    "shutdown",
    "tuned_settings",
]

HOST = "127.0.0.1"
#: Tries of another free port when the chosen one was taken before the server bound it.
_PORT_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True)
class Postmaster:
    """A server process of the cluster, as ``postmaster.pid`` describes it."""

    pid: int
    port: int
    socket_dir: str


def tuned_settings() -> dict[str, str]:
    """Return the server settings for throwaway test data (durability is not needed)."""
    return {
        "listen_addresses": HOST,
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


def server_url(port: int) -> DatabaseURL:
    """Return the admin URL of the server listening on *port*."""
    return DatabaseURL(
        scheme="postgresql", username=DB_USER, host=HOST, port=port, database="postgres"
    )


def read_pid_file(files: ClusterFiles) -> Postmaster | None:
    """Return what ``postmaster.pid`` says; None if there is none.

    A file half-written by a postmaster that died while starting gives a
    Postmaster with pid 0.
    """
    try:
        lines = files.pid_file.read_text().splitlines()
        return Postmaster(pid=int(lines[0]), port=int(lines[3]), socket_dir=lines[4])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        return Postmaster(pid=0, port=0, socket_dir="")


def ping(port: int, timeout: float) -> bool:
    """Whether a PostgreSQL server on *port* accepts a session (startup handshake)."""
    params = f"user\0{DB_USER}\0database\0postgres\0\0".encode()
    body = struct.pack("!I", 196608) + params  # protocol 3.0
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def boot(cluster: Cluster, preferred_port: int | None = None) -> Postmaster:
    """Start the server (making the cluster first if needed); return its postmaster.

    *preferred_port* is tried first: after a crash, URLs that live lease
    holders already have keep working.
    """
    bindir, user = cluster.prepare()
    files = cluster.files
    socket_dir = new_socket_dir()
    user.chown(Path(socket_dir))
    settings = tuned_settings()
    settings["unix_socket_directories"] = socket_dir
    problem = ""
    for attempt in range(_PORT_ATTEMPTS):
        port = preferred_port if attempt == 0 and preferred_port else _free_port()
        settings["port"] = str(port)
        options = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())
        with files.log.open("w"):
            pass
        user.chown(files.log)
        args = ["start", "-w", "-t", str(PG_CTL_TIMEOUT_S), "-s", "-l", str(files.log)]
        args += ["-o", options]
        started = cluster.pg_ctl(args, bindir=bindir, user=user)
        found = read_pid_file(files)
        if started.returncode == 0 and found is not None and found.pid:
            return found
        problem = files.log_tail() or started.stderr.strip()
        if "could not bind" not in problem and "already in use" not in problem:
            break
        # Another program took the port between our check and the start: retry.
    remove_socket_dir(socket_dir)
    raise ProvisioningError(
        f"The embedded PostgreSQL {cluster.version} in {files.data_dir} did not start:\n"
        f"{problem}\nSee the full log in {files.log}. Delete {files.home} to rebuild "
        "the cluster, or set SQLSANDBOX_URL to a running server."
    )


def shutdown(cluster: Cluster, postmaster: Postmaster) -> None:
    """Stop the server (``pg_ctl stop -m fast``) and remove its socket directory."""
    result = cluster.pg_ctl(["stop", "-m", "fast", "-w", "-t", str(PG_CTL_TIMEOUT_S)])
    if result.returncode != 0 and is_postmaster(postmaster.pid):
        raise ProvisioningError(
            f"Could not stop the embedded PostgreSQL (pid {postmaster.pid}) in "
            f"{cluster.files.data_dir}: {result.stderr.strip()}. Stop it with "
            f"'kill {postmaster.pid}'."
        )
    remove_socket_dir(postmaster.socket_dir)
