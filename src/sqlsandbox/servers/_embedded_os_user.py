"""Who runs the embedded PostgreSQL's programs, and how they are run.

PostgreSQL refuses to run as root; as root, initdb, pg_ctl and the server run
as the unprivileged OS user ``sqlsandbox`` (created on first use, root's
groups dropped). Otherwise they run as ourselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import filelock

from .._exceptions import ProvisioningError

__all__ = ["LOCK_TIMEOUT_S", "SERVER_USER", "OsUser", "run", "server_user"]

#: OS user that owns and runs the cluster when sqlsandbox runs as root.
SERVER_USER = "sqlsandbox"
#: Seconds to wait for a file lock held by another process (useradd, start, stop).
LOCK_TIMEOUT_S = 180.0


@dataclasses.dataclass(frozen=True)
class OsUser:
    """Who runs initdb and the server: ourselves, or SERVER_USER when we are root."""

    name: str | None
    uid: int
    gid: int

    def run_kwargs(self) -> dict[str, Any]:
        """Return the ``subprocess.run`` arguments that run a program as this user."""
        if self.name is None:
            return {}
        # Drop root's groups too, not only the uid.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        """Give *path* to this user (nothing to do when it is ourselves)."""
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


def server_user() -> OsUser:
    """Return who runs PostgreSQL here, creating SERVER_USER if we are root."""
    if os.geteuid() != 0:
        return OsUser(name=None, uid=os.getuid(), gid=os.getgid())
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        entry = _create_server_user()
    return OsUser(name=SERVER_USER, uid=entry.pw_uid, gid=entry.pw_gid)


def _create_server_user() -> pwd.struct_passwd:
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER]
    # Processes using different cache dirs may get here at once; concurrent
    # useradd calls fail on /etc/passwd.lock, so take turns.
    lock = filelock.FileLock(os.path.join(tempfile.gettempdir(), "sqlsandbox-useradd.lock"))
    problem = ""
    with lock.acquire(timeout=LOCK_TIMEOUT_S):
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


def _child_env() -> dict[str, str]:
    # PG* variables (PGPORT, PGDATA, PGOPTIONS...) would override our settings,
    # and English messages let us recognise "address already in use".
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def run(cmd: list[str], user: OsUser, timeout: float) -> subprocess.CompletedProcess[str]:
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
