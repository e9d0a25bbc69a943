"""PyMySQL used directly, in a sandbox (see :mod:`._mysql` for the transaction model).

``pymysql.connect`` *is* ``pymysql.connections.Connection``, a class that apps
also import by name, test with ``isinstance`` and subclass. So the class's
``__new__`` is what routes: a connect aimed at the routed database returns a
:class:`SandboxConnection` (not an instance, so ``__init__`` is skipped), any
other one a plain connection.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..ownership import SQLAdapter, shutdown_socket
from ._direct import CursorProxy, internal_caller
from ._mysql import (
    IN_TRANS,
    KIND,
    ROUTES,
    ProxyBase,
    database_of,
    rollback_on_timeout,
    server_kwargs,
)

if TYPE_CHECKING:
    from ._direct import Route, Routes

__all__ = ["PyMySQLAdapter", "PyMySQLConnector", "SandboxConnection", "SandboxCursor", "apply"]


class PyMySQLAdapter(SQLAdapter):
    """A PyMySQL connection in autocommit mode (the sandbox sends START TRANSACTION)."""

    def __init__(self, raw: Any) -> None:
        super().__init__(raw, kind=KIND, dialect="mysql")
        self.rollback_on_timeout = False

    def execute(self, sql: str) -> None:
        self.raw.query(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.server_status & IN_TRANS)

    def is_broken(self) -> bool:
        return not self.raw.open

    def close(self) -> None:
        if self.raw.open:
            try:
                self.raw.close()
            except Exception:  # the server may be gone: the socket is closed either way
                self.raw._force_close()

    def interrupt(self) -> None:
        sock = getattr(self.raw, "_sock", None)
        if sock is not None:
            shutdown_socket(sock.fileno())


class PyMySQLConnector:
    """Open the owner's connection with the app's connect arguments."""

    is_async: ClassVar[Literal[False]] = False
    kind = KIND

    def __init__(self, cls: Any, kwargs: dict[str, Any]) -> None:
        self.cls = cls
        self.kwargs = server_kwargs(kwargs)

    def connect(self) -> PyMySQLAdapter:
        import pymysql

        cls = self.cls or pymysql.connections.Connection
        raw = object.__new__(cls)  # past the routing __new__
        raw.__init__(autocommit=True, **self.kwargs)
        adapter = PyMySQLAdapter(raw)
        adapter.rollback_on_timeout = rollback_on_timeout(raw)
        return adapter


class SandboxConnection(ProxyBase):
    """An owner's PyMySQL connection as one ``pymysql.connect()`` of the app sees it."""

    __slots__ = ()

    def _run(self, fn: Callable[..., Any], query: Any, args: tuple[Any, ...]) -> Any:
        """Run one statement in this caller's turn, inside the app's transaction if any."""
        if self._closed or not self._check.ok():
            self._denied()
        verb = self._verb(query)
        if verb is not None:
            self._control(verb)
            return 0
        if self._opens_transaction():
            self._lease.begin()
        with self._lease.statement(query):
            return fn(*args)

    def _turn(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a call that talks to the server but sends no statement of the app's."""
        if self._closed or not self._check.ok():
            self._denied()
        with self._lease.turn():
            return fn(*args)

    def _control(self, verb: str) -> None:
        lease = self._lease
        if verb == "begin":
            lease.commit()  # MySQL's BEGIN commits an open transaction first
            lease.begin()
        elif verb == "commit":
            lease.commit()
        elif verb == "rollback":
            lease.rollback()

    # -- the pymysql.connections.Connection interface ---------------------------------

    @property
    def open(self) -> bool:
        return not self._closed

    def cursor(self, cursor: Any = None) -> SandboxCursor:
        if self._closed:
            raise self._closed_error()
        from pymysql.cursors import SSCursor

        cls = cursor or self.cursorclass
        return SandboxCursor(self, cls(self._raw), server_side=issubclass(cls, SSCursor))

    def connect(self, sock: Any = None) -> None:
        """Do nothing: the owner's connection is open (``defer_connect=True`` apps call this)."""

    def query(self, sql: Any, unbuffered: bool = False) -> Any:
        return self._run(self._raw.query, sql, (sql, unbuffered))

    def begin(self) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        self._control("begin")

    def commit(self) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        self._lease.commit()

    def rollback(self) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        self._lease.rollback()

    def autocommit(self, value: Any) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        if self._commits_on_autocommit(value):
            self._lease.commit()
        self.autocommit_mode = bool(value)

    def ping(self, reconnect: bool = False) -> None:
        if self._closed:
            raise self._already_closed()
        self._turn(self._raw.ping, False)

    def select_db(self, db: Any) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        error = self._other_database(db)
        if error is not None:
            raise error

    def show_warnings(self) -> Any:
        return self._turn(self._raw.show_warnings)

    def kill(self, thread_id: int) -> Any:
        return self._turn(self._raw.kill, thread_id)

    def close(self) -> None:
        """Give the owner's connection back, rolling back what this proxy left open."""
        if self._closed:
            raise self._already_closed()
        self._closed = True
        self._lease.close()

    def __enter__(self) -> SandboxConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Like PyMySQL: close, which drops what was not committed.
        if not self._closed:
            self.close()


class SandboxCursor(CursorProxy):
    """A real cursor of the owner's connection; statements take turns on the proxy."""

    __slots__ = ()
    _conn: SandboxConnection
    _cursor: Any

    def execute(self, query: Any, args: Any = None) -> Any:
        return self._conn._run(self._cursor.execute, query, (query, args))

    def executemany(self, query: Any, args: Any) -> Any:
        return self._conn._run(self._cursor.executemany, query, (query, args))

    def callproc(self, procname: str, args: Any = ()) -> Any:
        return self._conn._run(self._cursor.callproc, None, (procname, args))

    def _fetch(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Buffered cursors hold their rows already; unbuffered ones read the connection.
        if not self._server_side:
            return fn(*args)
        return self._conn._turn(fn, *args)

    def fetchone(self) -> Any:
        return self._fetch(self._cursor.fetchone)

    def fetchmany(self, size: int | None = None) -> Any:
        return self._fetch(self._cursor.fetchmany, size)

    def fetchall(self) -> Any:
        return self._fetch(self._cursor.fetchall)

    def scroll(self, value: int, mode: str = "relative") -> Any:
        return self._fetch(self._cursor.scroll, value, mode)

    def nextset(self) -> Any:
        return self._conn._turn(self._cursor.nextset)

    def close(self) -> None:
        if self._server_side and not self._conn._closed:
            self._conn._turn(self._cursor.close)
        else:
            self._cursor.close()

    def __iter__(self) -> Iterator[Any]:
        if not self._server_side:
            return iter(self._cursor)
        return iter(self.fetchone, None)

    def __enter__(self) -> SandboxCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


# -- patching ---------------------------------------------------------------------------


def _connect_routed(cls: Any, route: Route, kwargs: dict[str, Any]) -> Any:
    connector = PyMySQLConnector(cls, kwargs)
    lease = route.sandbox.lease(connector)
    if lease is None:  # auto mode or unboxed: a plain connection, as the app asked
        return object.__new__(cls)  # Python then runs __init__ with the app's arguments
    return SandboxConnection(lease, route, connector, kwargs, KIND)


def _new(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """``Connection.__new__``: routed databases get the owner's connection."""
    if ROUTES.routes and not args:  # PyMySQL takes keyword arguments only
        route = ROUTES.find(database_of(kwargs))
        if route is not None and not internal_caller(sys._getframe(1)):
            return _connect_routed(cls, route, kwargs)
    return object.__new__(cls)


_NEW = staticmethod(_new)


def apply(routes: Routes) -> None:
    """Route ``pymysql.connect()`` while *routes* has any route.

    The ``__new__`` stays on the class after the last route is removed and
    then passes every connect through: Python 3.11 cannot take a ``__new__``
    set on a class back (deleting it leaves ``object.__new__`` refusing the
    connect arguments).
    """
    from pymysql.connections import Connection

    if vars(Connection).get("__new__") is not _NEW:
        setattr(Connection, "__new__", _NEW)  # noqa: B010 - mypy refuses assigning __new__
