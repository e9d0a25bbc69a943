"""Where the embedded PostgreSQL keeps its files: the cache directory, one cluster's files.

A cluster of PostgreSQL ``<version>`` lives in ``<cache_dir>/pg-<version>/``::

    data/           the cluster (PGDATA)
    postgres.log    the server log of the current (or last) start
    server.json     state: pid, port, socket directory, lease holders, keep
    server.lock     the file lock around start and stop
    install/        as root only, when the binaries had to be copied
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

__all__ = [
    "CACHE_DIR_ENV",
    "ROOT_CACHE_DIR",
    "ClusterFiles",
    "default_cache_dir",
    "make_dirs",
    "new_socket_dir",
    "remove_socket_dir",
]

CACHE_DIR_ENV = "SQLSANDBOX_CACHE_DIR"
#: Default cache directory as root: ``/root`` is 0700, so the server user could
#: not reach a cluster under ``~/.cache``.
ROOT_CACHE_DIR = Path("/var/tmp/sqlsandbox-cache")
#: Prefix of the socket directories we make; only those are ever removed.
_SOCKET_DIR_PREFIX = "sqlsandbox-pg-"


def default_cache_dir() -> Path:
    """Return where clusters are cached: SQLSANDBOX_CACHE_DIR, else a per-user cache dir."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    if os.geteuid() == 0:
        return ROOT_CACHE_DIR
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sqlsandbox"


@dataclasses.dataclass(frozen=True)
class ClusterFiles:
    """The files of the cluster of one PostgreSQL version in one cache directory."""

    cache_dir: Path
    home: Path

    @classmethod
    def of(cls, cache_dir: Path, version: str) -> ClusterFiles:
        """Return the files of PostgreSQL *version*'s cluster under *cache_dir*."""
        return cls(cache_dir, cache_dir.absolute() / f"pg-{version}")

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    @property
    def state(self) -> Path:
        return self.home / "server.json"

    @property
    def lock(self) -> Path:
        return self.home / "server.lock"

    @property
    def install_dir(self) -> Path:
        return self.home / "install"

    def cluster_exists(self) -> bool:
        """Whether initdb has made the cluster (it is renamed into place only when done)."""
        return (self.data_dir / "PG_VERSION").exists()

    def log_tail(self, lines: int = 20) -> str:
        """Return the last *lines* of the server log, or "" if there is none."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def make_dirs(path: Path) -> None:
    """Create *path* and missing parents, readable and enterable by everyone."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            # Explicit mode: a umask of 077 would lock the server user out.
            directory.chmod(0o755)


def new_socket_dir() -> str:
    """Make a private directory for the server's unix socket; return its path."""
    # A unix socket path is limited to ~107 bytes; ".s.PGSQL.65535" must still fit.
    tmp = tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=_SOCKET_DIR_PREFIX, dir=tmp if len(tmp) <= 60 else "/tmp")


def remove_socket_dir(path: str | None) -> None:
    """Remove a socket directory made by :func:`new_socket_dir`; leave any other alone."""
    # Only directories we made: never a shared one such as /tmp.
    if path and Path(path).name.startswith(_SOCKET_DIR_PREFIX):
        shutil.rmtree(path, ignore_errors=True)
