"""The abstract server: what every backend (PostgreSQL, MariaDB, SQLite) offers.

A server is where databases live. Backends do the engine-specific SQL; this
base enforces the one rule that protects users' data: sqlsandbox only creates,
clones from-into or drops databases whose names carry its prefix.
"""

from __future__ import annotations

import abc
import re
from typing import TYPE_CHECKING, Any, ClassVar

from .._exceptions import ProvisioningError

if TYPE_CHECKING:
    from types import TracebackType

    from .._urls import DatabaseURL

__all__ = ["DATABASE_PREFIX", "Server", "check_owned_name"]

DATABASE_PREFIX = "sqlsandbox_"
# Lower-case letters, digits and underscores only, so names never need quoting
# rules that differ between engines, and stay within PostgreSQL's 63 bytes.
_NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")


def check_owned_name(name: str) -> str:
    """Return *name* if sqlsandbox may create or drop it, else raise ProvisioningError."""
    if not name.startswith(DATABASE_PREFIX) or not _NAME_RE.match(name):
        raise ProvisioningError(
            f"Refusing to create or drop database {name!r}: sqlsandbox only touches "
            f"databases it named itself ('{DATABASE_PREFIX}' followed by lower-case letters, "
            "digits and underscores, at most 63 characters). Use a generated name."
        )
    return name


class Server(abc.ABC):
    """One database server (or SQLite directory) that sqlsandbox administers.

    Methods are synchronous and safe to call from any thread. Backends may keep
    one admin connection open, but never on a database sqlsandbox created: a
    session on a template would block ``CREATE DATABASE ... TEMPLATE``.
    """

    #: Engine name: ``"postgresql"``, ``"mariadb"`` or ``"sqlite"``.
    backend: ClassVar[str]
    #: Whether clones are cheap server-side copies (templates) or row copies.
    supports_templates: ClassVar[bool] = False

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url.masked()}>"

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- facts -------------------------------------------------------------

    @abc.abstractmethod
    def version(self) -> str:
        """Return the server version as text, for example ``"15.20"``."""

    @abc.abstractmethod
    def max_connections(self) -> int:
        """Return how many connections the server accepts in all."""

    @abc.abstractmethod
    def connections_in_use(self) -> int:
        """Return how many connections are open on the server right now."""

    def database_url(self, name: str, *, scheme: str | None = None) -> DatabaseURL:
        """Return the URL of database *name* on this server, optionally with another scheme."""
        url = self.url.with_database(name)
        return url.with_scheme(scheme) if scheme else url

    # -- databases -----------------------------------------------------------

    @abc.abstractmethod
    def list_databases(self, prefix: str = DATABASE_PREFIX) -> list[str]:
        """Return the names of databases starting with *prefix*, sorted."""

    def database_exists(self, name: str) -> bool:
        """Return whether database *name* exists."""
        return name in self.list_databases(prefix=name)

    def create_database(self, name: str) -> None:
        """Create the empty database *name* (which must carry our prefix)."""
        self._create(check_owned_name(name))

    def clone_database(self, name: str, template: str) -> None:
        """Create database *name* as a copy of *template* (both ours)."""
        self._clone(check_owned_name(name), check_owned_name(template))

    def drop_database(self, name: str, *, missing_ok: bool = True) -> None:
        """Drop database *name* (ours only), terminating its connections first."""
        self._drop(check_owned_name(name), missing_ok=missing_ok)

    @abc.abstractmethod
    def terminate_connections(self, name: str) -> int:
        """Close every other session connected to database *name*; return how many."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Any = None, *, database: str | None = None) -> list[Any]:
        """Run one statement on an admin connection (to *database*); return its rows."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release anything the backend keeps open."""

    # -- backend hooks ---------------------------------------------------------

    @abc.abstractmethod
    def _create(self, name: str) -> None: ...

    @abc.abstractmethod
    def _clone(self, name: str, template: str) -> None: ...

    @abc.abstractmethod
    def _drop(self, name: str, *, missing_ok: bool) -> None: ...
