"""aiosqlite used directly, in a sandbox: the asyncio twin of :mod:`._sqlite`.

``aiosqlite.connect()`` of the routed file returns (awaited, or entered with
``async with``) a proxy of the calling code's owner connection, itself an
aiosqlite connection opened with ``isolation_level=None``. Transactions follow
sqlite3's legacy model exactly as in :mod:`._sqlite`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..ownership import AsyncSQLAdapter
from ._direct import CursorProxy, Opening, internal_caller
from ._sqlite import ROUTES, ProxyBase, path_of, server_kwargs, split_script

if TYPE_CHECKING:
    from ..ownership import Lease
    from ._direct import Route, Routes

__all__ = ["AKIND", "AiosqliteConnector", "AsyncSandboxConnection", "apply"]

AKIND = "aiosqlite"
_ORIGINAL: dict[str, Any] = {}


class AiosqliteAdapter(AsyncSQLAdapter):
    """An aiosqlite connection (sqlite3 in a worker thread); usable from any event loop."""

    def __init__(self, raw: Any) -> None:
        super().__init__(raw, kind=AKIND, dialect="sqlite")

    async def execute(self, sql: str) -> None:
        await self.raw.execute_fetchall(sql)

    def in_transaction(self) -> bool:
        return not self.is_broken() and bool(self.raw.in_transaction)

    def is_broken(self) -> bool:
        return self.raw._connection is None

    async def close(self) -> None:
        await self.raw.close()
        thread = getattr(self.raw, "_thread", None)
        if thread is not None:
            # Its worker thread resolved close() and is returning: wait for it, so
            # that nothing outlives the sandbox (leak checks would see it).
            thread.join(5)

    def discard(self) -> None:
        self.raw.stop()

    def interrupt(self) -> None:
        conn = self.raw._connection
        if conn is not None:
            conn.interrupt()  # sqlite3's interrupt may be called from any thread


class AiosqliteConnector:
    """Open the owner's aiosqlite connection to the file the app asked for."""

    is_async: ClassVar[Literal[True]] = True
    kind = AKIND
    loop_bound = False

    def __init__(self, database: Any, kwargs: dict[str, Any]) -> None:
        self.database = database
        self.kwargs = server_kwargs(kwargs)
        self.kwargs.pop("iter_chunk_size", None)

    async def connect(self) -> AiosqliteAdapter:
        raw = await _ORIGINAL["connect"](
            self.database, isolation_level=None, check_same_thread=False, **self.kwargs
        )
        return AiosqliteAdapter(raw)


def _result(coro: Coroutine[Any, Any, Any]) -> Opening:
    """What aiosqlite's methods return: awaitable, or usable with ``async with``."""
    return Opening(coro, _close_cursor)


async def _close_cursor(obj: Any, failed: bool) -> None:
    if isinstance(obj, AsyncSandboxCursor):
        await obj.close()


async def _close(conn: Any, failed: bool) -> None:
    await conn.close()


class AsyncSandboxConnection(ProxyBase):
    """An owner's aiosqlite connection as one ``aiosqlite.connect()`` of the app sees it."""

    __slots__ = ()

    def __init__(
        self, lease: Lease, route: Route, connector: AiosqliteConnector, kwargs: dict[str, Any]
    ) -> None:
        super().__init__(lease, route, connector, kwargs, AKIND)

    def _closed_error(self) -> Exception:
        return ValueError("Connection closed")

    async def _run(self, fn: Callable[..., Any], sql: Any, args: tuple[Any, ...]) -> Any:
        if self._closed or not self._check.ok():
            await self._adenied()
        verb = self._verb(sql)
        if verb is not None:
            await self._control(verb)
            return None
        if self._opens_transaction(sql):
            await self._lease.abegin()
        async with self._lease.statement(sql):
            self._use_factories()
            return await fn(*args)

    async def _control(self, verb: str) -> None:
        lease = self._lease
        if verb == "begin":
            self._refuse_nested_begin()
            await lease.abegin()
        elif verb == "commit":
            await lease.acommit()
        elif verb == "rollback":
            await lease.arollback()

    async def _cursor(self) -> AsyncSandboxCursor:
        if self._closed:
            raise self._closed_error()
        cursor = await self._raw.cursor()
        cursor.row_factory = self.row_factory
        return AsyncSandboxCursor(self, cursor)

    # -- the aiosqlite.Connection interface ----------------------------------------------

    def cursor(self) -> Opening:
        return _result(self._cursor())

    def execute(self, sql: str, parameters: Any = None) -> Opening:
        return _result(self._execute("execute", sql, parameters))

    def executemany(self, sql: str, parameters: Any) -> Opening:
        return _result(self._execute("executemany", sql, parameters))

    def executescript(self, script: str) -> Opening:
        return _result(self._execute("executescript", script, None))

    async def _execute(self, method: str, sql: str, parameters: Any) -> AsyncSandboxCursor:
        cursor = await self._cursor()
        if parameters is None:
            await getattr(cursor, method)(sql)
        else:
            await getattr(cursor, method)(sql, parameters)
        return cursor

    def execute_fetchall(self, sql: str, parameters: Any = None) -> Opening:
        async def run() -> Any:
            cursor = await self._execute("execute", sql, parameters)
            try:
                return await cursor.fetchall()
            finally:
                await cursor.close()

        return _result(run())

    async def execute_insert(self, sql: str, parameters: Any = None) -> Any:
        cursor = await self._execute("execute", sql, parameters)
        try:
            await cursor.execute("SELECT last_insert_rowid()")
            return await cursor.fetchone()
        finally:
            await cursor.close()

    async def commit(self) -> None:
        if self._closed or not self._check.ok():
            await self._adenied()
        await self._lease.acommit()

    async def rollback(self) -> None:
        if self._closed or not self._check.ok():
            await self._adenied()
        await self._lease.arollback()

    @property
    def total_changes(self) -> int:
        return int(self._raw.total_changes)

    async def close(self) -> None:
        """Give the owner's connection back, rolling back what this proxy left open."""
        if self._closed:
            return
        self._closed = True
        await self._lease.aclose()

    async def __aenter__(self) -> AsyncSandboxConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __await__(self) -> Generator[Any, None, AsyncSandboxConnection]:
        return self._ready().__await__()

    async def _ready(self) -> AsyncSandboxConnection:
        return self


class AsyncSandboxCursor(CursorProxy):
    """A real aiosqlite cursor of the owner's connection; statements go through the proxy."""

    __slots__ = ()
    _conn: AsyncSandboxConnection
    _cursor: Any

    async def execute(self, sql: str, parameters: Any = None) -> AsyncSandboxCursor:
        args = (sql,) if parameters is None else (sql, parameters)
        await self._conn._run(self._cursor.execute, sql, args)
        return self

    async def executemany(self, sql: str, parameters: Any) -> AsyncSandboxCursor:
        await self._conn._run(self._cursor.executemany, sql, (sql, parameters))
        return self

    async def executescript(self, script: str) -> AsyncSandboxCursor:
        conn = self._conn
        if conn._commits_before_script():
            await conn.commit()
        for statement in split_script(script):
            await conn._run(self._cursor.execute, statement, (statement,))
        return self

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for row in self._cursor:
            yield row

    async def __aenter__(self) -> AsyncSandboxCursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._cursor.close()

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


async def _connect_routed(route: Route, database: Any, kwargs: dict[str, Any]) -> Any:
    connector = AiosqliteConnector(database, kwargs)
    lease = await route.sandbox.alease(connector)
    if lease is None:  # auto mode or unboxed: a plain connection, as the app asked
        return await _ORIGINAL["connect"](database, **kwargs)
    return AsyncSandboxConnection(lease, route, connector, kwargs)


def connect(database: Any, **kwargs: Any) -> Any:
    """Stand-in for ``aiosqlite.connect``: the routed file gets the owner's connection."""
    if not internal_caller(sys._getframe(1)):
        route = ROUTES.find(path_of(database, kwargs.get("uri", False)))
        if route is not None:
            return Opening(_connect_routed(route, database, kwargs), _close)
    return _ORIGINAL["connect"](database, **kwargs)


def apply(routes: Routes) -> None:
    """Patch ``aiosqlite.connect`` (called when the sqlite routes are first installed)."""
    import aiosqlite

    _ORIGINAL["connect"] = aiosqlite.connect
    routes.patch_references(aiosqlite.connect, connect, skip=("aiosqlite",))
    routes.patch(aiosqlite, "connect", connect)
