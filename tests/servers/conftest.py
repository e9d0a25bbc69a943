"""Helpers for the server tests: unique database names that are always dropped, and a
PostgreSQL that checks passwords (the shared test servers trust every local login)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.servers import Server

#: The password of the role in ``password_postgres``; tests assert it never shows.
PASSWORD = "sqlsandboxSecret42"


def unique_name(tag: str = "") -> str:
    """Return a fresh database name carrying sqlsandbox's prefix."""
    return f"sqlsandbox_{tag}{uuid.uuid4().hex[:12]}"


@pytest.fixture
def new_name(server: Server) -> Iterator[Callable[[], str]]:
    """Hand out fresh database names on ``server``; drop every one of them afterwards."""
    handed: list[str] = []

    def make() -> str:
        handed.append(unique_name())
        return handed[-1]

    yield make
    for name in handed:
        server.drop_database(name)


def _run_as(user: pwd.struct_passwd | None) -> dict[str, object]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@pytest.fixture(scope="session")
def password_postgres() -> Iterator[DatabaseURL]:
    """A private PostgreSQL cluster with scram-sha-256 authentication on a unix socket.

    Yields the URL of its superuser ``postgres`` with the right password; tests
    swap in a wrong one. Costs ~0.7 s, once per worker that needs it.
    """
    from sqlsandbox.servers._embedded import find_binaries

    try:
        binaries = find_binaries()
    except Exception as exc:
        pytest.skip(f"no PostgreSQL binaries to start a password-checking server: {exc}")
    # PostgreSQL refuses to run as root.
    user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="sqlsandbox-pw-"))
    data = directory / "data"
    pwfile = directory / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if user is not None:
        for path in (directory, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
    run = _run_as(user)
    try:
        subprocess.run(
            [
                *(binaries.path("initdb"), "-D", str(data), "-N", "-U", "postgres"),
                *("--auth=scram-sha-256", f"--pwfile={pwfile}"),
            ],
            check=True,
            capture_output=True,
            **run,  # type: ignore[arg-type]
        )
        options = f"-c listen_addresses='' -c unix_socket_directories={directory} -c fsync=off"
        subprocess.run(
            [
                *(binaries.path("pg_ctl"), "-D", str(data), "-w", "-s", "-o", options),
                *("-l", str(directory / "log"), "start"),
            ],
            check=True,
            capture_output=True,
            **run,  # type: ignore[arg-type]
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"could not start a password-checking PostgreSQL: {exc} {detail[-300:]!r}")
    try:
        yield DatabaseURL.parse(f"postgresql://postgres:{PASSWORD}@/postgres?host={directory}")
    finally:
        subprocess.run(
            [binaries.path("pg_ctl"), "-D", str(data), "-m", "immediate", "-s", "stop"],
            capture_output=True,
            **run,  # type: ignore[arg-type]
        )
        shutil.rmtree(directory, ignore_errors=True)
