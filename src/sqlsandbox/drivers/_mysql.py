"""PyMySQL and aiomysql used directly: what the two routes share.

``sqlsandbox.mysql.install(sandbox)`` routes both drivers. ``pymysql.connect()``
(or ``pymysql.Connection(...)``), ``aiomysql.connect()`` and
``aiomysql.create_pool()`` aimed at the routed database hand out proxies of
the calling code's owner connection; other databases are untouched. The
DBAPI transaction model is kept: without ``autocommit`` (both drivers'
default) the first statement opens the app's transaction (a savepoint),
``commit()`` / ``rollback()`` end it, and ``begin()`` or a raw ``BEGIN``
starts one, committing an open one first as MySQL does. InnoDB undoes a
failing statement by itself, so statements outside a transaction need no
savepoint of their own (as with SQLite). Statements MariaDB/MySQL would
commit implicitly (DDL, ``LOCK TABLES``...) are refused. ``close()`` gives the
connection back. The blocking proxy lives in :mod:`._pymysql`, the asyncio
one and the pool in :mod:`._aiomysql`.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from ._direct import DRIVERS_PAGE, Proxy, Route, Routes, control_verb, require_database

if TYPE_CHECKING:
    from .._urls import DatabaseURL
    from ..ownership import Lease, Sandbox

__all__ = [
    "AKIND",
    "IN_TRANS",
    "KIND",
    "ROUTES",
    "ProxyBase",
    "arollback_on_timeout",
    "database_of",
    "install",
    "is_installed",
    "rollback_on_timeout",
    "server_kwargs",
    "uninstall",
]

KIND = "pymysql"
AKIND = "aiomysql"
#: connect() arguments that shape the app's view, not the owner's server connection.
_PROXY_ONLY = ("autocommit", "cursorclass", "defer_connect", "loop")
#: SERVER_STATUS_IN_TRANS of the MySQL protocol.
IN_TRANS = 1
_ROLLBACK_ON_TIMEOUT = "SELECT @@innodb_rollback_on_timeout"


def rollback_on_timeout(conn: Any) -> bool:
    """Return whether a lock wait timeout rolls back the whole transaction on *conn*'s server.

    With ``innodb_rollback_on_timeout`` on, error 1205 ends the test's
    transaction as a deadlock (1213) does, and the ownership layer must lose
    the connection: every adapter of a MariaDB/MySQL connection (direct or
    SQLAlchemy's) sets its ``rollback_on_timeout`` from this when it opens.
    *conn* is a PyMySQL connection; :func:`arollback_on_timeout` reads an
    aiomysql one.
    """
    from pymysql.cursors import Cursor  # tuples, whatever cursor class the app configured

    with conn.cursor(Cursor) as cursor:
        cursor.execute(_ROLLBACK_ON_TIMEOUT)
        return bool(cursor.fetchone()[0])


async def arollback_on_timeout(conn: Any) -> bool:
    """Return :func:`rollback_on_timeout` for an aiomysql connection."""
    from aiomysql.cursors import Cursor

    async with conn.cursor(Cursor) as cursor:
        await cursor.execute(_ROLLBACK_ON_TIMEOUT)
        return bool((await cursor.fetchone())[0])


def database_of(kwargs: dict[str, Any]) -> str | None:
    """Return the database a PyMySQL / aiomysql connect call aims at (None: no default one)."""
    database = kwargs.get("database") or kwargs.get("db")
    if isinstance(database, bytes):
        database = database.decode()
    return str(database) if database else None


def server_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return the connect arguments for the owner's connection (always autocommit)."""
    return {k: v for k, v in kwargs.items() if k not in _PROXY_ONLY}


def url_kwargs(url: DatabaseURL, database_key: str) -> dict[str, Any]:
    """Return connect arguments for the sandbox URL (``database_key``: ``database`` or ``db``)."""
    kwargs: dict[str, Any] = {"host": url.host or "localhost", "port": url.port or 3306}
    if url.username is not None:
        kwargs["user"] = url.username
    if url.password is not None:
        kwargs["password"] = url.password
    if url.database:
        kwargs[database_key] = url.database
    socket = url.query_value("unix_socket")
    if socket:
        kwargs["unix_socket"] = socket
    charset = url.query_value("charset")
    if charset:
        kwargs["charset"] = charset
    return kwargs


# -- what the blocking and asyncio proxies share (no I/O) ---------------------------------


class ProxyBase(Proxy):
    """An owner's connection as one ``connect()`` of the app sees it, minus the I/O.

    ``autocommit_mode`` and ``cursorclass`` are the proxy's own (the owner's
    connection stays in the test's transaction); anything else is read from
    the real connection.
    """

    __slots__ = (
        "autocommit_mode",
        "cursorclass",
    )

    def __init__(
        self, lease: Lease, route: Route, connector: Any, kwargs: dict[str, Any], kind: str
    ) -> None:
        super().__init__(lease, route, connector, kind)
        autocommit = kwargs.get("autocommit", False)
        # None means "the server's default", which is ON for MariaDB and MySQL.
        self.autocommit_mode = True if autocommit is None else bool(autocommit)
        self.cursorclass: Any = kwargs.get("cursorclass") or self._raw.cursorclass

    def get_autocommit(self) -> bool:
        return self.autocommit_mode

    def _verb(self, query: Any) -> str | None:
        """Return the transaction verb of a raw statement (begin, commit, rollback) or None."""
        return control_verb(query) if type(query) is str else None

    def _opens_transaction(self) -> bool:
        """Whether the next statement opens the app's transaction, as the DBAPI does."""
        return not self.autocommit_mode and not self._lease.in_transaction

    def _commits_on_autocommit(self, value: Any) -> bool:
        """Whether turning autocommit on ends the app's open transaction (MySQL commits it)."""
        return bool(value) and not self.autocommit_mode and self._lease.in_transaction

    def _closed_error(self) -> Exception:
        from pymysql import err

        return err.InterfaceError(0, "Not connected")  # type: ignore[no-any-return]

    def _already_closed(self) -> Exception:
        from pymysql import err

        return err.Error("Already closed")  # type: ignore[no-any-return]

    def _other_database(self, db: Any) -> Exception | None:
        """Refuse ``select_db()`` of another database: it would move the owner's connection."""
        if database_of({"db": db}) == self._route.database:
            return None
        from pymysql import err

        return err.NotSupportedError(  # type: ignore[no-any-return]
            f"select_db({db!r}) on a sandboxed {self._check.kind} connection: it is the "
            f"test's connection to {self._route.database!r}, shared by every connection the "
            f"test opens, and switching its database would outlive this one. Connect to "
            f"{db!r} with a connect() call of its own (not routed). "
            f"See {DRIVERS_PAGE}#pymysql-and-aiomysql"
        )


# -- routes and install -----------------------------------------------------------------


def _apply(routes: Routes) -> None:
    if _importable("pymysql"):
        from . import _pymysql

        _pymysql.apply(routes)
    if _importable("aiomysql"):
        from . import _aiomysql

        _aiomysql.apply(routes)


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


ROUTES = Routes("mysql", _apply)


def install(sandbox: Sandbox, *, database: str | None = None) -> None:
    """Route the app's PyMySQL and aiomysql connections to *database* through *sandbox*.

    Patches ``pymysql.connect`` (PyMySQL's ``Connection`` class), and when
    aiomysql is installed ``aiomysql.connect`` and ``aiomysql.create_pool``.
    *database* defaults to the database of the sandbox URL.
    """
    name = require_database(sandbox, database, "mysql")
    ROUTES.add(Route(sandbox, name, statement_savepoints=False), lambda: _defaults(sandbox))


def _defaults(sandbox: Sandbox) -> list[Any]:
    """aiomysql's connector (when installed) for acheckout(), PyMySQL's for checkout()."""
    url = sandbox.url
    if url is None or url.backend not in ("mysql", "mariadb"):
        return []
    from ._aiomysql import AiomysqlConnector
    from ._pymysql import PyMySQLConnector

    defaults: list[Any] = []
    if _importable("aiomysql"):
        defaults.append(AiomysqlConnector(url_kwargs(url, "db")))
    defaults.append(PyMySQLConnector(None, url_kwargs(url, "database")))
    return defaults


def uninstall(sandbox: Sandbox | None = None) -> None:
    """Stop routing for *sandbox* (every sandbox if None); the last one restores the drivers."""
    ROUTES.remove(sandbox)


def is_installed(sandbox: Sandbox | None = None) -> bool:
    return ROUTES.installed(sandbox)
