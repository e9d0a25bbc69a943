"""Small helpers shared by the benchmark groups."""

from __future__ import annotations

import os
import socket


def answers(host: str, port: int) -> bool:
    """Return whether a TCP server accepts connections on *host*:*port*."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def postgres_url() -> str | None:
    """Return the PostgreSQL server to measure; None means the embedded one."""
    for name in ("SQLSANDBOX_BENCH_URL", "SQLSANDBOX_URL"):
        if os.environ.get(name):
            return os.environ[name]
    if answers("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    return None  # open_server(None): the embedded PostgreSQL
