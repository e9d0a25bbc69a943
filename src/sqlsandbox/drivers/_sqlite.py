"""sqlite3 (and, through :mod:`._aiosqlite`, aiosqlite) used directly, in a sandbox.

``sqlite3.connect()`` of the routed database file returns a proxy of the
calling code's owner connection. The module's legacy transaction model is
kept: with an ``isolation_level`` (the default) an INSERT / UPDATE / DELETE /
REPLACE opens the app's transaction (a savepoint) and ``commit()`` /
``rollback()`` / ``with conn:`` end it; with ``isolation_level=None`` the app's
own ``BEGIN`` / ``COMMIT`` / ``ROLLBACK`` statements become savepoints.
``executescript()`` runs statement by statement instead of committing first.
SQLite undoes a failing statement by itself, so no per-statement savepoint is
needed, except for a statement that lands in another open connection's
savepoint (:meth:`~sqlsandbox.ownership.Lease.statement` makes that one).
``close()`` gives the connection back.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from ..ownership import SQLAdapter, transaction_control
from ._direct import CursorProxy, Proxy, Route, Routes, internal_caller, memoized, require_database

if TYPE_CHECKING:
    from ..ownership import Lease, Sandbox

__all__ = [
    "KIND",
    "ROUTES",
    "ProxyBase",
    "SQLiteStatements",
    "SandboxConnection",
    "install",
    "is_installed",
    "path_of",
    "split_script",
    "uninstall",
]

KIND = "sqlite3"
#: connect() arguments that shape the app's view, not the file connection.
PROXY_ONLY = ("isolation_level", "check_same_thread", "factory", "autocommit")
_ORIGINAL: dict[str, Any] = {}
#: Statements before which sqlite3's legacy mode opens a transaction implicitly.
_DML = re.compile(
    r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.I | re.S
)


#: SQLite's own BEGIN forms, which the ownership layer's classifier does not know.
_SQLITE_BEGIN = re.compile(
    r"\s*BEGIN\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE)(?:\s+TRANSACTION)?\s*;?\s*$", re.I
)


def _control_of(sql: str) -> str | None:
    verb = transaction_control(sql)
    if verb is None and _SQLITE_BEGIN.match(sql):
        return "begin"
    return verb


def _implicit_begin(sql: str) -> bool:
    return _DML.match(sql) is not None


#: Classify a raw transaction statement of SQLite: begin, commit, rollback or None.
control_of: Callable[[str], str | None] = memoized(_control_of)
#: Whether sqlite3's legacy mode would BEGIN before a statement.
implicit_begin: Callable[[str], bool] = memoized(_implicit_begin)


def path_of(database: Any, uri: bool = False) -> str | None:
    """Return the real path of the file a connect call opens, or None (memory, temp)."""
    if isinstance(database, bytes):
        database = os.fsdecode(database)
    database = os.fspath(database)
    if uri and database.startswith("file:"):
        parts = urlsplit(database)
        if parse_qs(parts.query).get("mode") == ["memory"]:
            return None
        database = unquote(parts.path)
    if database in ("", ":memory:"):
        return None
    return str(os.path.realpath(database))


def split_script(script: str) -> Iterator[str]:
    """Yield the statements of *script* one by one (SQLite decides where each ends)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""
    rest = buffer[:-1]
    if rest.strip():
        yield rest


def server_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in PROXY_ONLY}


# -- ownership adapter and connector ---------------------------------------------------


class SQLiteStatements:
    """Mixin for adapters whose ``raw`` is a ``sqlite3.Connection`` (here and SQLAlchemy's)."""

    raw: Any

    def execute(self, sql: str) -> None:
        self.raw.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.in_transaction)

    def is_broken(self) -> bool:
        try:
            self.raw.total_changes  # noqa: B018 - raises once the connection is closed
        except sqlite3.ProgrammingError:
            return True
        return False

    def interrupt(self) -> None:
        self.raw.interrupt()  # sqlite3's interrupt may be called from any thread


class SQLiteAdapter(SQLiteStatements, SQLAdapter):
    """A sqlite3 connection in autocommit mode, shared by the owner's threads in turns."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        super().__init__(raw, kind=KIND, dialect="sqlite")

    def close(self) -> None:
        self.raw.close()


class SQLiteConnector:
    """Open the owner's connection to the file the app asked for."""

    is_async: ClassVar[Literal[False]] = False
    kind = KIND

    def __init__(self, database: Any, kwargs: dict[str, Any]) -> None:
        self.database = database
        self.kwargs = server_kwargs(kwargs)

    def connect(self) -> SQLiteAdapter:
        raw = _ORIGINAL["connect"](
            self.database, isolation_level=None, check_same_thread=False, **self.kwargs
        )
        return SQLiteAdapter(raw)


# -- the proxies: what the blocking and asyncio twins share (no I/O) ---------------------------


class ProxyBase(Proxy):
    """An owner's connection as one ``connect()`` of the app sees it, minus the I/O.

    ``isolation_level``, ``row_factory`` and ``text_factory`` belong to the
    proxy; other attributes and methods (``create_function``, ``backup``...)
    are the real connection's.
    """

    __slots__ = (
        "isolation_level",
        "row_factory",
        "text_factory",
    )

    def __init__(
        self, lease: Lease, route: Route, connector: Any, kwargs: dict[str, Any], kind: str
    ) -> None:
        super().__init__(lease, route, connector, kind)
        self.isolation_level: str | None = kwargs.get("isolation_level", "")
        self.row_factory: Any = None
        self.text_factory: Any = str

    @property
    def in_transaction(self) -> bool:
        return self._lease.in_transaction

    def _verb(self, sql: Any) -> str | None:
        """Return the transaction verb of a raw statement (begin, commit, rollback) or None."""
        return control_of(sql) if type(sql) is str else None

    def _opens_transaction(self, sql: Any) -> bool:
        """Whether *sql* opens the app's transaction first (sqlite3's legacy model)."""
        return (
            self.isolation_level is not None
            and not self._lease.in_transaction
            and type(sql) is str
            and implicit_begin(sql)
        )

    def _commits_before_script(self) -> bool:
        """Whether ``executescript()`` commits the app's transaction first, as sqlite3 does."""
        return self.isolation_level is not None and self._lease.in_transaction

    def _refuse_nested_begin(self) -> None:
        if self._lease.in_transaction:
            raise sqlite3.OperationalError("cannot start a transaction within a transaction")

    def _use_factories(self) -> None:
        """Set the proxy's factories on the shared connection, in the caller's turn."""
        raw = self._raw
        if raw.row_factory is not self.row_factory:
            raw.row_factory = self.row_factory
        if raw.text_factory is not self.text_factory:
            raw.text_factory = self.text_factory


class SandboxConnection(ProxyBase):
    """An owner's sqlite3 connection as one ``sqlite3.connect()`` of the app sees it."""

    __slots__ = ()
    _raw: sqlite3.Connection

    def __init__(
        self, lease: Lease, route: Route, connector: SQLiteConnector, kwargs: dict[str, Any]
    ) -> None:
        super().__init__(lease, route, connector, kwargs, KIND)

    def _closed_error(self) -> Exception:
        return sqlite3.ProgrammingError("Cannot operate on a closed database.")

    def _run(self, fn: Callable[..., Any], sql: Any, args: tuple[Any, ...]) -> Any:
        """Run one statement in this caller's turn; False if it was transaction control."""
        if self._closed or not self._check.ok():
            self._denied()
        verb = self._verb(sql)
        if verb is not None:
            self._control(verb)
            return False
        if self._opens_transaction(sql):
            self._lease.begin()
        with self._lease.statement(sql):
            self._use_factories()
            return fn(*args)

    def _control(self, verb: str) -> None:
        lease = self._lease
        if verb == "begin":
            self._refuse_nested_begin()
            lease.begin()
        elif verb == "commit":
            lease.commit()
        elif verb == "rollback":
            lease.rollback()

    def _cursor(self) -> sqlite3.Cursor:
        if self._closed:
            raise self._closed_error()
        cursor = self._raw.cursor()
        cursor.row_factory = self.row_factory
        return cursor

    # -- the sqlite3.Connection interface --------------------------------------------

    def cursor(self, factory: Any = None) -> SandboxCursor:
        return SandboxCursor(self, self._cursor())

    def execute(self, sql: str, parameters: Any = (), /) -> SandboxCursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> SandboxCursor:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> SandboxCursor:
        return self.cursor().executescript(script)

    def commit(self) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        self._lease.commit()

    def rollback(self) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        self._lease.rollback()

    @property
    def total_changes(self) -> int:
        return self._raw.total_changes

    def close(self) -> None:
        """Give the owner's connection back, rolling back what this proxy left open."""
        if self._closed:
            return
        self._closed = True
        self._lease.close()

    def __enter__(self) -> SandboxConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> Literal[False]:
        # Like sqlite3: commit or roll back, but do not close.
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        return False


class SandboxCursor(CursorProxy):
    """A real cursor of the owner's connection; statements go through the proxy."""

    __slots__ = ()
    _conn: SandboxConnection
    _cursor: sqlite3.Cursor

    def execute(self, sql: str, parameters: Any = (), /) -> SandboxCursor:
        self._conn._run(self._cursor.execute, sql, (sql, parameters))
        return self

    def executemany(self, sql: str, parameters: Any, /) -> SandboxCursor:
        self._conn._run(self._cursor.executemany, sql, (sql, parameters))
        return self

    def executescript(self, script: str, /) -> SandboxCursor:
        conn = self._conn
        if conn._commits_before_script():
            conn.commit()
        for statement in split_script(script):
            conn._run(self._cursor.execute, statement, (statement,))
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def __next__(self) -> Any:
        return next(self._cursor)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


# -- patching ---------------------------------------------------------------------------


def _connect_routed(route: Route, database: Any, kwargs: dict[str, Any]) -> Any:
    connector = SQLiteConnector(database, kwargs)
    lease = route.sandbox.lease(connector)
    if lease is None:  # auto mode or unboxed: a plain connection, as the app asked
        return _ORIGINAL["connect"](database, **kwargs)
    return SandboxConnection(lease, route, connector, kwargs)


_POSITIONAL = (
    "timeout",
    "detect_types",
    "isolation_level",
    "check_same_thread",
    "factory",
    "cached_statements",
    "uri",
)


def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
    """Stand-in for ``sqlite3.connect``: the routed file gets the owner's connection."""
    if not internal_caller(sys._getframe(1)):
        if args:
            kwargs = {**dict(zip(_POSITIONAL, args, strict=False)), **kwargs}
            args = ()
        route = ROUTES.find(path_of(database, kwargs.get("uri", False)))
        if route is not None:
            return _connect_routed(route, database, kwargs)
    return _ORIGINAL["connect"](database, *args, **kwargs)


def _apply(routes: Routes) -> None:
    _ORIGINAL["connect"] = sqlite3.connect
    routes.patch_references(sqlite3.connect, connect, skip=("sqlite3", "_sqlite3"))
    routes.patch(sqlite3, "connect", connect)
    try:
        import aiosqlite  # noqa: F401 - patched only when installed
    except ImportError:
        return
    from . import _aiosqlite

    _aiosqlite.apply(routes)


ROUTES = Routes("sqlite", _apply)


def install(sandbox: Sandbox, *, database: str | os.PathLike[str] | None = None) -> None:
    """Route the app's ``sqlite3.connect()`` / ``aiosqlite.connect()`` of a file through *sandbox*.

    *database* is the file's path; it defaults to the sandbox URL's database.
    Files are compared by their real path.
    """
    given = os.fspath(database) if database is not None else None
    path = path_of(require_database(sandbox, given, "sqlite"))
    if path is None:
        from .._exceptions import ConfigError

        raise ConfigError(
            "sqlsandbox.sqlite.install() routes a database file; an in-memory database "
            "cannot be shared with the app. Pass database='path/to/file.sqlite3'."
        )
    ROUTES.add(Route(sandbox, path, statement_savepoints=False), lambda: _defaults(path))


def _defaults(path: str) -> list[Any]:
    """aiosqlite's connector (when installed) for acheckout(), sqlite3's for checkout()."""
    defaults: list[Any] = [SQLiteConnector(path, {})]
    try:
        from ._aiosqlite import AiosqliteConnector
    except ImportError:
        return defaults
    return [AiosqliteConnector(path, {}), *defaults]


def uninstall(sandbox: Sandbox | None = None) -> None:
    """Stop routing for *sandbox* (every sandbox if None); the last one restores the modules."""
    ROUTES.remove(sandbox)


def is_installed(sandbox: Sandbox | None = None) -> bool:
    return ROUTES.installed(sandbox)
