"""SQLite backend: the "server" is a directory and each database one file in it.

Database ``name`` lives in ``<directory>/<name>.sqlite3``. A clone copies the
template's file (the kernel copies it, ~10x faster than the backup API for
small files); a template with un-checkpointed WAL content is copied with the
backup API instead, which sees it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

from .._exceptions import ConfigError, ProvisioningError
from .._urls import DatabaseURL
from ._base import DATABASE_PREFIX, Server, check_owned_name
from ._errors import URL_HINT, wrong_backend

__all__ = ["DEFAULT_SQLITE_DIRECTORY", "SQLiteServer"]

#: Where ``sqlite`` alone keeps its databases, relative to the current directory.
DEFAULT_SQLITE_DIRECTORY = Path(".sqlsandbox") / "sqlite"
SUFFIX = ".sqlite3"
_COMPANIONS = ("-wal", "-shm", "-journal")


class SQLiteServer(Server):
    """A directory of SQLite database files."""

    backend: ClassVar[str] = "sqlite"
    supports_templates: ClassVar[bool] = False

    def __init__(self, url: str | DatabaseURL) -> None:
        if isinstance(url, str) and url.strip().split("+", 1)[0] == "sqlite" and ":" not in url:
            url = DatabaseURL(scheme=url.strip())
        url = DatabaseURL.parse(url)
        if url.backend != "sqlite":
            raise wrong_backend(type(self).__name__, url, "sqlite:///<directory>")
        if url.host or url.username or url.port:
            raise ConfigError(
                f"SQLite URL {url.masked()} names a host; SQLite uses a directory: write "
                f"'sqlite:///relative/dir' or 'sqlite:////absolute/dir' in {URL_HINT}."
            )
        # Resolved now: a later chdir must not move the databases.
        self.directory = Path(url.database or DEFAULT_SQLITE_DIRECTORY).absolute()
        super().__init__(DatabaseURL(scheme=url.scheme, database=str(self.directory)))

    def path(self, name: str) -> Path:
        """Return the file that holds database *name*."""
        return self.directory / f"{name}{SUFFIX}"

    def database_url(self, name: str, *, scheme: str | None = None) -> DatabaseURL:
        """Return ``sqlite:///<absolute path of the file>`` (with this URL's driver)."""
        return DatabaseURL(scheme=scheme or self.url.scheme, database=str(self.path(name)))

    # -- facts -------------------------------------------------------------------

    def version(self) -> str:
        """Return the SQLite library version, for example ``"3.40.1"``."""
        return sqlite3.sqlite_version

    def version_info(self) -> tuple[int, ...]:
        """Return the SQLite library version as numbers."""
        return sqlite3.sqlite_version_info

    def max_connections(self) -> int:
        """Return a large number: SQLite has no connection limit."""
        return 1_000_000

    def connections_in_use(self) -> int:
        """Return 0: SQLite keeps no count of open connections."""
        return 0

    # -- databases ---------------------------------------------------------------

    def list_databases(self, prefix: str = DATABASE_PREFIX) -> list[str]:
        """Return the databases (files) whose names start with *prefix*, sorted."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        names = (
            entry.name[: -len(SUFFIX)]
            for entry in entries
            if entry.name.endswith(SUFFIX) and entry.is_file()
        )
        return sorted(name for name in names if name.startswith(prefix))

    def database_exists(self, name: str) -> bool:
        """Return whether the file of database *name* exists."""
        return self.path(name).is_file()

    def _new_file(self, name: str) -> Path:
        """Create the empty file of *name* (not there before); return its path."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProvisioningError(
                f"Cannot create the SQLite directory {self.directory}: {exc.strerror}. "
                f"Name a writable directory in {URL_HINT}."
            ) from None
        path = self.path(name)
        try:
            # Exclusive: two callers never get the same file.
            path.open("xb").close()
        except FileExistsError:
            raise ProvisioningError(
                f"Cannot create SQLite database {name!r}: {path} already exists. "
                "Drop it first or use a new name."
            ) from None
        except OSError as exc:
            raise ProvisioningError(
                f"Cannot create SQLite database {name!r} at {path}: {exc.strerror}. "
                f"Name a writable directory in {URL_HINT}."
            ) from None
        return path

    def _create(self, name: str) -> None:
        # An empty file is a valid, empty SQLite database.
        self._new_file(name)

    def _clone(self, name: str, template: str) -> None:
        source = self.path(template)
        if not source.is_file():
            raise ProvisioningError(
                f"Cannot clone SQLite database {template!r}: {source} does not exist. "
                "Build the template before cloning it."
            )
        target = self._new_file(name)
        try:
            wal = source.with_name(source.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                # Committed pages may still sit in the WAL: let SQLite read them.
                with (
                    closing(sqlite3.connect(source)) as src,
                    closing(sqlite3.connect(target)) as dst,
                ):
                    src.backup(dst)
            else:
                shutil.copyfile(source, target)
        except BaseException as exc:
            target.unlink(missing_ok=True)
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise ProvisioningError(
                    f"Cannot clone SQLite database {template!r} into {name!r} in "
                    f"{self.directory}: {_reason(exc)}. {self._fix(exc, source)}"
                ) from None
            raise

    def _fix(self, exc: BaseException, path: Path) -> str:
        """Return the fix for an OS or SQLite error met on the file at *path*."""
        code = getattr(exc, "errno", None)
        if code == errno.ENOSPC or "full" in str(exc).lower():
            return f"Free disk space on the file system of {self.directory}, then run again."
        if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly" in str(exc).lower():
            return (
                f"Make {self.directory} and its files writable by this user, or name a "
                f"writable directory in {URL_HINT}."
            )
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return (
                f"{path} is damaged: delete it with its -wal and -shm files and run again "
                "(a template is rebuilt on the next run)."
            )
        if "locked" in str(exc).lower():
            return (
                f"Another connection holds a write transaction on {path}: commit or close it first."
            )
        return f"Check that {self.directory} is writable and has free space."

    def _drop(self, name: str, *, missing_ok: bool) -> None:
        path = self.path(name)
        if not path.exists() and not missing_ok:
            raise ProvisioningError(
                f"Cannot drop SQLite database {name!r}: {path} does not exist. "
                "Pass missing_ok=True to ignore a missing database."
            )
        for file in (path, *(path.with_name(path.name + s) for s in _COMPANIONS)):
            file.unlink(missing_ok=True)

    def terminate_connections(self, name: str) -> int:
        """Return 0: other processes' SQLite connections cannot be closed from here."""
        check_owned_name(name)
        return 0

    def execute(self, sql: str, params: Any = None, *, database: str | None = None) -> list[Any]:
        """Run *sql* (``?`` placeholders) in database *name*, or in memory; return its rows."""
        target = str(self.path(database)) if database else ":memory:"
        if database and not self.path(database).is_file():
            raise ProvisioningError(
                f"Cannot run SQL in SQLite database {database!r}: "
                f"{self.path(database)} does not exist. Create it first "
                "(server.create_database(name)), or check the name against "
                "server.list_databases()."
            )
        try:
            with closing(sqlite3.connect(target, isolation_level=None)) as conn:
                cursor = conn.execute(sql, params if params is not None else ())
                return cursor.fetchall()
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError | sqlite3.IntegrityError) and not (
                _FILE_TROUBLE.search(str(exc))
            ):
                fix = (
                    "SQLite rejected the statement: fix the SQL or the data it writes "
                    "(the detail above says why)."
                )
            else:
                fix = self._fix(exc, Path(target))
            raise ProvisioningError(
                f"Could not run SQL in SQLite database {target}: {_reason(exc)}. {fix}"
            ) from None


_FILE_TROUBLE = re.compile(r"locked|readonly|full|not a database|unable to open|disk i/o")


def _reason(exc: BaseException) -> str:
    """Return what went wrong, without the errno prefix OSError puts first."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc).rstrip(".")
