"""asyncpg used directly: ``asyncpg.connect()`` and ``asyncpg.create_pool()`` in a sandbox.

Connections the app opens to the routed database are :class:`SandboxConnection`
proxies of the calling code's owner connection. Every call takes a turn on
it; ``conn.transaction()`` (nested or not) and raw ``BEGIN`` / ``COMMIT`` /
``ROLLBACK`` become savepoints; a statement outside any transaction runs in
a savepoint of its own, so a failing one does not abort the test's
transaction; ``close()`` gives the connection back. Pools hand out proxies
from ``acquire()`` and open no connection of their own.
"""

from __future__ import annotations

import asyncio
import os
import sys
import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from ..ownership import AsyncSQLAdapter, abort_transport
from ._direct import OwnerCheck, Route, Routes, control_verb, internal_caller, require_database
from ._loops import watch_adapter

if TYPE_CHECKING:
    from ..ownership import HostLoop, Lease, Sandbox

__all__ = [
    "KIND",
    "AsyncpgAdapter",
    "AsyncpgConnector",
    "SandboxConnection",
    "SandboxPool",
    "SandboxTransaction",
    "install",
    "is_installed",
    "uninstall",
]

KIND = "asyncpg"

#: Keyword arguments of create_pool() that are not connection arguments.
_POOL_ONLY = (
    "init_size",
    "min_size",
    "max_size",
    "max_queries",
    "max_inactive_connection_lifetime",
    "connect",
    "setup",
    "init",
    "reset",
    "loop",
)
#: Coroutine methods of asyncpg.Connection that talk to the server.
_IO_METHODS = frozenset(
    {
        "copy_from_table",
        "copy_from_query",
        "copy_to_table",
        "copy_records_to_table",
        "set_type_codec",
        "reset_type_codec",
        "set_builtin_type_codec",
    }
)

_ORIGINAL: dict[str, Any] = {}


def _interface_error(message: str) -> Exception:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    return asyncpg.exceptions.InterfaceError(message)  # type: ignore[no-any-return]


# -- the ownership adapter ---------------------------------------------------------


class AsyncpgAdapter(AsyncSQLAdapter):
    """One asyncpg connection, tied to the event loop that opened it."""

    multi_statement = True

    def __init__(self, raw: Any) -> None:
        super().__init__(raw, kind=KIND, dialect="postgresql")
        self.loop = asyncio.get_running_loop()
        #: Callbacks the app added through a proxy: (proxy, asyncpg remover, its arguments).
        self.app_callbacks: list[tuple[object, str, tuple[Any, ...]]] = []

    def forget_callbacks(self, proxy: object | None = None) -> list[tuple[Any, ...]]:
        """Remove what *proxy* (every proxy: None) added; return the channels to unlisten.

        Loggers and log and termination listeners go at once, without I/O;
        ``remove_listener`` may send UNLISTEN, so the caller awaits it.
        """
        mine = [entry for entry in self.app_callbacks if proxy is None or entry[0] is proxy]
        self.app_callbacks = [entry for entry in self.app_callbacks if entry not in mine]
        channels = []
        for _proxy, remover, args in mine:
            if remover == "remove_listener":
                channels.append(args)
            else:
                getattr(self.raw, remover)(*args)
        return channels

    async def rollback(self, *, sequences: bool = False, session: bool = False) -> None:
        # Before the checkin's statements, so that the app's loggers see none of them.
        channels = self.forget_callbacks()
        await super().rollback(sequences=sequences, session=session)
        for args in channels:  # outside any transaction now: UNLISTEN takes effect
            await self.raw.remove_listener(*args)

    async def execute(self, sql: str) -> None:
        await self.raw.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.is_in_transaction())

    def is_broken(self) -> bool:
        return bool(self.raw.is_closed())

    async def close(self) -> None:
        await self.raw.close(timeout=10)

    def discard(self) -> None:
        raw = self.raw
        if not raw.is_closed():
            abort_transport(getattr(raw, "_transport", None))
            raw.terminate()


class AsyncpgConnector:
    """Open the owner's connection with the arguments the app gave asyncpg."""

    is_async: ClassVar[Literal[True]] = True
    kind = KIND
    loop_bound = True

    def __init__(self, dsn: str | None, kwargs: dict[str, Any]) -> None:
        self.dsn = dsn
        self.kwargs = kwargs

    async def connect(self) -> AsyncpgAdapter:
        adapter = AsyncpgAdapter(await _ORIGINAL["connect"](self.dsn, **self.kwargs))
        watch_adapter(adapter)
        return adapter


def database_of(dsn: str | None, kwargs: dict[str, Any]) -> str | None:
    """Return the database an asyncpg connect call aims at, as asyncpg resolves it."""
    database = kwargs.get("database")
    user = kwargs.get("user")
    if not database and dsn:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        database = query.get("database", query.get("dbname", [None]))[0]
        if not database and parts.path.strip("/"):
            database = unquote(parts.path.strip("/"))
        user = user or query.get("user", [None])[0] or (unquote(parts.username or "") or None)
    return database or os.environ.get("PGDATABASE") or user or os.environ.get("PGUSER")


# -- the connection proxy -----------------------------------------------------------


class SandboxConnection:
    """An owner's asyncpg connection as one ``connect()`` / ``acquire()`` of the app sees it.

    Unknown attributes are read from the real connection; methods that talk
    to the server take a turn first.
    """

    __slots__ = (
        "__weakref__",
        "_check",
        "_connector",
        "_host",
        "_lease",
        "_pool",
        "_raw",
        "_released",
        "_route",
        "_txs",
        "_wrap",
    )

    def __init__(
        self,
        lease: Lease,
        route: Route,
        connector: AsyncpgConnector,
        pool: SandboxPool | None = None,
    ) -> None:
        self._lease = lease
        self._raw: Any = lease.raw
        self._host: HostLoop | None = lease.host
        self._route = route
        self._connector = connector
        self._check = OwnerCheck(route.sandbox, KIND)
        self._pool = pool
        #: Open ``transaction()`` blocks, innermost last.
        self._txs: list[SandboxTransaction] = []
        self._wrap = route.statement_savepoints and lease.sandboxed
        self._released: str | None = None

    def __repr__(self) -> str:
        return f"<sqlsandbox asyncpg connection of owner {self._lease.owner_name!r}>"

    # -- turns -------------------------------------------------------------------

    async def _denied(self) -> None:
        if self._released is not None:
            raise _interface_error(self._released)
        sandbox = self._route.sandbox
        if sandbox.current_owner() is None:
            await sandbox.alease(self._connector)  # raises the sandbox's own error
        raise self._check.error(self._lease)

    async def _call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wrap: bool = True,
        sql: Any = None,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` on the owner's connection in this caller's turn.

        *sql* is the statement's text, for the lease to tell reads from writes
        (None: a write).
        """
        if self._released is not None or not self._check.ok():
            await self._denied()
        lease = self._lease
        host = self._host
        async with lease.statement(sql, noted_by=self._txs[-1]._lease if self._txs else None):
            if not (wrap and self._wrap and not self._txs and not lease.in_transaction):
                return await (
                    fn(*args, **kwargs) if host is None else host.run(fn(*args, **kwargs))
                )
            # Outside any app transaction: a savepoint of its own, so that a
            # failing statement does not abort the test's transaction.
            await lease.abegin()
            try:
                result = await (
                    fn(*args, **kwargs) if host is None else host.run(fn(*args, **kwargs))
                )
            except BaseException:
                await lease.arollback()
                raise
            await lease.acommit()
            return result

    async def _fork(self) -> Lease:
        """Return a new lease on this owner's connection, for one app transaction."""
        if self._released is not None or not self._check.ok():
            await self._denied()
        lease = await self._route.sandbox.alease(self._connector)
        if lease is None or lease.adapter is not self._lease.adapter:
            raise self._check.error(self._lease)
        lease.nest_in((self._txs[-1]._lease or self._lease) if self._txs else self._lease)
        return lease

    async def _control(self, verb: str) -> str:
        """Map a raw BEGIN / COMMIT / ROLLBACK from the app onto its own transaction."""
        if self._released is not None or not self._check.ok():
            await self._denied()
        lease = self._lease
        if verb == "begin":
            if not lease.in_transaction:
                await lease.abegin()
            return "BEGIN"
        if verb == "commit":
            await lease.acommit()
            return "COMMIT"
        if verb == "rollback":
            await lease.arollback()
            return "ROLLBACK"
        return "SET"

    # -- queries -----------------------------------------------------------------

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109 - asyncpg's signature
        if not args and type(query) is str:
            verb = control_verb(query)
            if verb is not None:
                return await self._control(verb)
        return await self._call(self._raw.execute, (query, *args), {"timeout": timeout}, sql=query)  # type: ignore[no-any-return]

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's signature
        await self._call(self._raw.executemany, (command, args), {"timeout": timeout})

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        return await self._call(self._raw.fetch, (query, *args), kwargs, sql=query)  # type: ignore[no-any-return]

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._call(self._raw.fetchrow, (query, *args), kwargs, sql=query)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._call(self._raw.fetchval, (query, *args), kwargs, sql=query)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> list[Any]:
        return await self._call(self._raw.fetchmany, (query, args), kwargs, sql=query)  # type: ignore[no-any-return]

    async def prepare(self, query: str, **kwargs: Any) -> SandboxStatement:
        statement = await self._call(self._raw.prepare, (query,), kwargs, sql=query)
        return SandboxStatement(self, statement)

    def cursor(self, query: str, *args: Any, **kwargs: Any) -> SandboxCursorFactory:
        return SandboxCursorFactory(self, query, args, kwargs)

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> SandboxTransaction:
        """Return an app transaction: a savepoint, nested or not (the options are ignored)."""
        return SandboxTransaction(self)

    def is_in_transaction(self) -> bool:
        return bool(self._txs) or self._lease.in_transaction

    # -- callbacks on the connection ---------------------------------------------------
    # asyncpg keeps them on the connection object, which serves the next owner too:
    # they go when this proxy is given back (as asyncpg's pool release drops them),
    # or at the owner's checkin for a proxy never closed.

    def _track(self, remover: str, args: tuple[Any, ...]) -> None:
        adapter = self._lease.adapter
        if isinstance(adapter, AsyncpgAdapter):
            adapter.app_callbacks.append((self, remover, args))

    def _untrack(self, remover: str, args: tuple[Any, ...]) -> None:
        adapter = self._lease.adapter
        if isinstance(adapter, AsyncpgAdapter):
            adapter.app_callbacks = [
                entry for entry in adapter.app_callbacks if entry[1:] != (remover, args)
            ]

    async def add_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        await self._call(self._raw.add_listener, (channel, callback), {})
        self._track("remove_listener", (channel, callback))

    async def remove_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        self._untrack("remove_listener", (channel, callback))
        await self._call(self._raw.remove_listener, (channel, callback), {})

    def add_log_listener(self, callback: Callable[..., Any]) -> None:
        self._raw.add_log_listener(callback)
        self._track("remove_log_listener", (callback,))

    def remove_log_listener(self, callback: Callable[..., Any]) -> None:
        self._untrack("remove_log_listener", (callback,))
        self._raw.remove_log_listener(callback)

    def add_termination_listener(self, callback: Callable[..., Any]) -> None:
        self._raw.add_termination_listener(callback)
        self._track("remove_termination_listener", (callback,))

    def remove_termination_listener(self, callback: Callable[..., Any]) -> None:
        self._untrack("remove_termination_listener", (callback,))
        self._raw.remove_termination_listener(callback)

    def add_query_logger(self, callback: Callable[..., Any]) -> None:
        self._raw.add_query_logger(callback)
        self._track("remove_query_logger", (callback,))

    def remove_query_logger(self, callback: Callable[..., Any]) -> None:
        self._untrack("remove_query_logger", (callback,))
        self._raw.remove_query_logger(callback)

    async def _forget_callbacks(self) -> None:
        adapter = self._lease.adapter
        if not isinstance(adapter, AsyncpgAdapter):
            return
        for args in adapter.forget_callbacks(self):
            try:
                await self._call(self._raw.remove_listener, args, {})
            except Exception:
                # Not in this caller's turn: the owner's checkin removes it.
                adapter.app_callbacks.append((None, "remove_listener", args))

    # -- closing ---------------------------------------------------------------------

    async def _give_back(self, why: str) -> None:
        if self._released is not None:
            return
        await self._forget_callbacks()
        self._released = why
        txs, self._txs = self._txs, []
        for tx in reversed(txs):
            if tx._lease is not None:
                await tx._lease.aclose()
        await self._lease.aclose()

    async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's signature
        """Give the owner's connection back, rolling back what this proxy left open."""
        await self._give_back("connection is closed")

    def terminate(self) -> None:
        """Stop using the connection; what is left open is rolled back at checkin."""
        self._released = "connection is closed"

    def is_closed(self) -> bool:
        return self._released is not None or bool(self._raw.is_closed())

    async def reset(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's signature
        """Do nothing: the owner's connection is reset when the owner checks in."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._raw, name)
        if name in _IO_METHODS:

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await self._call(attr, args, kwargs)

            return call
        return attr


class SandboxTransaction:
    """``conn.transaction()`` of a proxy: one savepoint on the owner's connection."""

    __slots__ = ("_conn", "_lease", "_state")

    def __init__(self, conn: SandboxConnection) -> None:
        self._conn = conn
        self._lease: Lease | None = None
        self._state = "new"

    def __repr__(self) -> str:
        return f"<sqlsandbox asyncpg transaction {self._state}>"

    async def start(self) -> None:
        if self._state != "new":
            raise _interface_error(f"cannot start; the transaction is already {self._state}")
        conn = self._conn
        lease = await conn._fork()
        await lease.abegin()
        self._lease = lease
        self._state = "started"
        conn._txs.append(self)

    async def _end(self, *, commit: bool) -> None:
        if self._state != "started":
            verb = "commit" if commit else "rollback"
            raise _interface_error(f"cannot {verb}; the transaction is {self._state}")
        conn = self._conn
        if conn._released is not None or not conn._check.ok():
            await conn._denied()
        self._state = "committed" if commit else "rolledback"
        if self in conn._txs:
            conn._txs.remove(self)
        lease = self._lease
        assert lease is not None
        await (lease.acommit() if commit else lease.arollback())

    async def commit(self) -> None:
        await self._end(commit=True)

    async def rollback(self) -> None:
        await self._end(commit=False)

    async def __aenter__(self) -> None:
        await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._state == "started":
            await self._end(commit=exc_type is None)


class SandboxStatement:
    """A prepared statement of a proxy; its queries take turns like the connection's."""

    __slots__ = ("_conn", "_statement")

    def __init__(self, conn: SandboxConnection, statement: Any) -> None:
        self._conn = conn
        self._statement = statement

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._statement, name)
        if name in ("fetch", "fetchrow", "fetchval", "fetchmany", "executemany", "explain"):

            async def call(*args: Any, **kwargs: Any) -> Any:
                sql = self._statement.get_query() if name != "executemany" else None
                return await self._conn._call(attr, args, kwargs, sql=sql)

            return call
        if name == "cursor":
            return lambda *args, **kwargs: SandboxCursorFactory(
                self._conn, None, args, kwargs, statement=self._statement
            )
        return attr


class SandboxCursorFactory:
    """``conn.cursor(...)``: await it for a cursor, or iterate it."""

    __slots__ = ("_args", "_conn", "_kwargs", "_query", "_statement")

    def __init__(
        self,
        conn: SandboxConnection,
        query: str | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        statement: Any = None,
    ) -> None:
        self._conn = conn
        self._query = query
        self._args = args
        self._kwargs = kwargs
        self._statement = statement

    async def _open(self) -> Any:
        # The proxy fetches in chunks itself; asyncpg takes prefetch only when iterating.
        kwargs = {k: v for k, v in self._kwargs.items() if k != "prefetch"}

        async def make() -> Any:
            if self._statement is not None:
                return await self._statement.cursor(*self._args, **kwargs)
            return await self._conn._raw.cursor(self._query, *self._args, **kwargs)

        # Cursors live in a transaction: no per-statement savepoint around them.
        query = self._query if self._statement is None else self._statement.get_query()
        return await self._conn._call(make, (), {}, wrap=False, sql=query)

    def __await__(self) -> Generator[Any, None, SandboxCursor]:
        return self._make().__await__()

    async def _make(self) -> SandboxCursor:
        return SandboxCursor(self._conn, await self._open())

    async def __aiter__(self) -> Any:
        prefetch = self._kwargs.get("prefetch") or 50
        cursor = SandboxCursor(self._conn, await self._open())
        while True:
            rows = await cursor.fetch(prefetch)
            for row in rows:
                yield row
            if len(rows) < prefetch:
                return


class SandboxCursor:
    """A server-side cursor of a proxy; each fetch takes a turn."""

    __slots__ = ("_conn", "_cursor")

    def __init__(self, conn: SandboxConnection, cursor: Any) -> None:
        self._conn = conn
        self._cursor = cursor

    async def fetch(self, n: int, **kwargs: Any) -> list[Any]:
        return await self._conn._call(self._cursor.fetch, (n,), kwargs, wrap=False, sql="FETCH")  # type: ignore[no-any-return]

    async def fetchrow(self, **kwargs: Any) -> Any:
        return await self._conn._call(self._cursor.fetchrow, (), kwargs, wrap=False, sql="FETCH")

    async def forward(self, n: int, **kwargs: Any) -> int:
        return await self._conn._call(self._cursor.forward, (n,), kwargs, wrap=False, sql="FETCH")  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


# -- the pool -------------------------------------------------------------------------


class _Acquire:
    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: SandboxPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._pool._acquire().__await__()

    async def __aenter__(self) -> Any:
        self._conn = await self._pool._acquire()
        return self._conn

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        await self._pool.release(conn)


class SandboxPool:
    """What ``asyncpg.create_pool()`` returns for the routed database.

    It opens no connection: ``acquire()`` returns a proxy of the calling
    code's owner connection. Callers the sandbox lets use plain connections
    (auto mode, ``unboxed``) get them from a real pool made on first need.
    ``init`` runs once per owner connection, ``setup`` on every acquire.
    """

    def __init__(self, route: Route, dsn: str | None, kwargs: dict[str, Any]) -> None:
        self._route = route
        self._dsn = dsn
        self._pool_kwargs = kwargs
        connect_kwargs = {k: v for k, v in kwargs.items() if k not in _POOL_ONLY}
        self._connector = AsyncpgConnector(dsn, connect_kwargs)
        self._init = kwargs.get("init")
        self._setup = kwargs.get("setup")
        self._min_size = int(kwargs.get("min_size", 10))
        self._max_size = int(kwargs.get("max_size", 10))
        self._initialized: weakref.WeakSet[Any] = weakref.WeakSet()
        self._out: weakref.WeakSet[SandboxConnection] = weakref.WeakSet()
        self._plain: Any = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<sqlsandbox asyncpg pool for {self._route.database!r}>"

    def __await__(self) -> Generator[Any, None, SandboxPool]:
        return self._ready().__await__()

    async def _ready(self) -> SandboxPool:
        return self

    async def __aenter__(self) -> SandboxPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        return _Acquire(self, timeout)

    async def _acquire(self) -> Any:
        if self._closing:
            raise _interface_error("pool is closing")
        lease = await self._route.sandbox.alease(self._connector)
        if lease is None:
            if self._plain is None:
                self._plain = await _ORIGINAL["create_pool"](self._dsn, **self._pool_kwargs)
            return await self._plain.acquire()
        conn = SandboxConnection(lease, self._route, self._connector, pool=self)
        raw = lease.raw
        if self._init is not None and raw not in self._initialized:
            self._initialized.add(raw)
            await self._init(conn)
        if self._setup is not None:
            await self._setup(conn)
        self._out.add(conn)
        return conn

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's signature
        if isinstance(connection, SandboxConnection):
            self._out.discard(connection)
            await connection._give_back("connection has been released back to the pool")
        elif self._plain is not None:
            await self._plain.release(connection, timeout=timeout)

    async def close(self) -> None:
        """Refuse further acquires; the owners' connections stay with their owners."""
        self._closing = True
        if self._plain is not None:
            await self._plain.close()

    def terminate(self) -> None:
        self._closing = True
        if self._plain is not None:
            self._plain.terminate()

    async def expire_connections(self) -> None:
        if self._plain is not None:
            await self._plain.expire_connections()

    def is_closing(self) -> bool:
        return self._closing

    def get_size(self) -> int:
        return len(self._out)

    def get_idle_size(self) -> int:
        return 0

    def get_min_size(self) -> int:
        return self._min_size

    def get_max_size(self) -> int:
        return self._max_size

    def set_connect_args(self, dsn: str | None = None, **connect_kwargs: Any) -> None:
        self._dsn = dsn
        self._connector = AsyncpgConnector(dsn, connect_kwargs)

    async def _with(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        async with self.acquire() as conn:
            return await getattr(conn, method)(*args, **kwargs)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        return await self._with("execute", (query, *args), kwargs)  # type: ignore[no-any-return]

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
        await self._with("executemany", (command, args), kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        return await self._with("fetch", (query, *args), kwargs)  # type: ignore[no-any-return]

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._with("fetchrow", (query, *args), kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._with("fetchval", (query, *args), kwargs)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> list[Any]:
        return await self._with("fetchmany", (query, args), kwargs)  # type: ignore[no-any-return]

    async def copy_from_table(self, *args: Any, **kwargs: Any) -> str:
        return await self._with("copy_from_table", args, kwargs)  # type: ignore[no-any-return]

    async def copy_from_query(self, *args: Any, **kwargs: Any) -> str:
        return await self._with("copy_from_query", args, kwargs)  # type: ignore[no-any-return]

    async def copy_to_table(self, *args: Any, **kwargs: Any) -> str:
        return await self._with("copy_to_table", args, kwargs)  # type: ignore[no-any-return]

    async def copy_records_to_table(self, *args: Any, **kwargs: Any) -> str:
        return await self._with("copy_records_to_table", args, kwargs)  # type: ignore[no-any-return]


# -- patching ---------------------------------------------------------------------------


async def _connect_routed(route: Route, dsn: str | None, kwargs: dict[str, Any]) -> Any:
    connector = AsyncpgConnector(dsn, kwargs)
    lease = await route.sandbox.alease(connector)
    if lease is None:  # auto mode or unboxed: a plain connection, as the app asked
        return await _ORIGINAL["connect"](dsn, **kwargs)
    return SandboxConnection(lease, route, connector)


def connect(dsn: str | None = None, **kwargs: Any) -> Any:
    """Stand-in for ``asyncpg.connect``: routed databases get the owner's connection."""
    if not internal_caller(sys._getframe(1)):
        route = ROUTES.find(database_of(dsn, kwargs))
        if route is not None:
            return _connect_routed(route, dsn, kwargs)
    return _ORIGINAL["connect"](dsn, **kwargs)


def create_pool(dsn: str | None = None, **kwargs: Any) -> Any:
    """Stand-in for ``asyncpg.create_pool``: routed databases get a :class:`SandboxPool`."""
    if not internal_caller(sys._getframe(1)):
        connect_kwargs = {k: v for k, v in kwargs.items() if k not in _POOL_ONLY}
        route = ROUTES.find(database_of(dsn, connect_kwargs))
        if route is not None:
            return SandboxPool(route, dsn, kwargs)
    return _ORIGINAL["create_pool"](dsn, **kwargs)


def _apply(routes: Routes) -> None:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    _ORIGINAL["connect"] = asyncpg.connect
    _ORIGINAL["create_pool"] = asyncpg.create_pool
    skip = ("asyncpg",)
    routes.patch_references(asyncpg.connect, connect, skip=skip)
    routes.patch_references(asyncpg.create_pool, create_pool, skip=skip)
    routes.patch(asyncpg, "connect", connect)
    routes.patch(asyncpg, "create_pool", create_pool)


ROUTES = Routes("asyncpg", _apply)


def install(
    sandbox: Sandbox, *, database: str | None = None, statement_savepoints: bool = True
) -> None:
    """Route the app's ``asyncpg.connect()`` / ``create_pool()`` to *database* through *sandbox*.

    *database* defaults to the database of the sandbox URL. With
    ``statement_savepoints`` (the default) a statement outside any app
    transaction runs in a savepoint of its own (two extra round trips), so a
    failing statement does not abort the test's transaction.
    """
    name = require_database(sandbox, database, "asyncpg")
    route = Route(sandbox, name, statement_savepoints=statement_savepoints)
    ROUTES.add(route, lambda: _defaults(sandbox))


def _defaults(sandbox: Sandbox) -> list[Any]:
    """So that an eager sandbox.acheckout() opens an asyncpg connection."""
    url = sandbox.url
    if url is None or url.backend != "postgresql":
        return []
    return [AsyncpgConnector(url.with_scheme("postgresql").render(), {})]


def uninstall(sandbox: Sandbox | None = None) -> None:
    """Stop routing for *sandbox* (every sandbox if None); the last one restores asyncpg."""
    ROUTES.remove(sandbox)


def is_installed(sandbox: Sandbox | None = None) -> bool:
    return ROUTES.installed(sandbox)
