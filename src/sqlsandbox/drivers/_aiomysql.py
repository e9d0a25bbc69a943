"""aiomysql used directly, in a sandbox: the asyncio twin of :mod:`._pymysql`.

``aiomysql.connect()`` (awaited, or entered with ``async with``) of the routed
database returns a proxy of the calling code's owner connection, itself an
aiomysql connection tied to the event loop that opened it (or to the
sandbox's host loop, see :class:`~sqlsandbox.ownership.HostLoop`).
``aiomysql.create_pool()`` returns a :class:`SandboxPool` that opens no
connection of its own.

aiomysql's ``close()`` and ``Pool.release()`` are not coroutines, yet giving
back an open transaction means a ROLLBACK TO on the server. They start it
in a task, and every later call on that owner's connection waits for it, so
the rollback never lands on top of work done after it.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..ownership import AsyncSQLAdapter, abort_transport
from ._direct import CursorProxy, Opening, Ready, internal_caller
from ._mysql import (
    AKIND,
    IN_TRANS,
    ROUTES,
    ProxyBase,
    arollback_on_timeout,
    database_of,
    server_kwargs,
)

if TYPE_CHECKING:
    from ..ownership import HostLoop, Lease
    from ._direct import Route, Routes

__all__ = [
    "AiomysqlAdapter",
    "AiomysqlConnector",
    "AsyncSandboxConnection",
    "AsyncSandboxCursor",
    "SandboxPool",
    "apply",
]

#: Positional parameters of aiomysql.connect(), filled in by apply().
_CONNECT_PARAMS: list[str] = []
_ORIGINAL: dict[str, Any] = {}
#: Rollbacks started by synchronous close() / release(), per owner connection (adapter).
_PENDING: weakref.WeakKeyDictionary[Any, set[asyncio.Task[None]]] = weakref.WeakKeyDictionary()


class AiomysqlAdapter(AsyncSQLAdapter):
    """An aiomysql connection in autocommit mode, tied to the loop that opened it."""

    def __init__(self, raw: Any) -> None:
        super().__init__(raw, kind=AKIND, dialect="mysql")
        self.loop = asyncio.get_running_loop()
        self.rollback_on_timeout = False

    async def execute(self, sql: str) -> None:
        await self.raw.query(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.server_status & IN_TRANS)

    def is_broken(self) -> bool:
        return bool(self.raw.closed)

    async def close(self) -> None:
        try:
            await self.raw.ensure_closed()
        except Exception:  # the server may be gone: close without the goodbye
            self.discard()

    def discard(self) -> None:
        writer = getattr(self.raw, "_writer", None)
        abort_transport(writer.transport if writer is not None else None)
        try:
            self.raw.close()
        except RuntimeError:  # its event loop is closed; the socket is closed already
            pass


class AiomysqlConnector:
    """Open the owner's connection with the app's connect arguments."""

    is_async: ClassVar[Literal[True]] = True
    kind = AKIND
    loop_bound = True

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = server_kwargs(kwargs)

    async def connect(self) -> AiomysqlAdapter:
        from aiomysql.connection import connect  # the module's own: never patched

        adapter = AiomysqlAdapter(await connect(autocommit=True, **self.kwargs))
        adapter.rollback_on_timeout = await arollback_on_timeout(adapter.raw)
        return adapter


#: What a release that needs no I/O returns.
_DONE = Ready()


async def _settle(adapter: Any) -> None:
    """Wait for the rollbacks that synchronous closes started on this owner's connection."""
    tasks = _PENDING.get(adapter)
    if not tasks:
        return
    loop = asyncio.get_running_loop()
    waiting = [t for t in tasks if t.get_loop() is loop and t is not asyncio.current_task()]
    if waiting:
        await asyncio.wait(waiting)


class AsyncSandboxConnection(ProxyBase):
    """An owner's aiomysql connection as one ``aiomysql.connect()`` / ``acquire()`` sees it."""

    __slots__ = ("_host",)

    def __init__(
        self, lease: Lease, route: Route, connector: Any, kwargs: dict[str, Any], kind: str
    ) -> None:
        super().__init__(lease, route, connector, kwargs, kind)
        self._host: HostLoop | None = lease.host

    async def _ready(self) -> None:
        """Check that the caller may use the proxy, after pending rollbacks are done."""
        if self._closed or not self._check.ok():
            await self._adenied()
        if _PENDING:
            await _settle(self._lease.adapter)

    def _io(self, coro: Coroutine[Any, Any, Any]) -> Awaitable[Any]:
        host = self._host
        return coro if host is None else host.run(coro)

    async def _run(self, fn: Callable[..., Any], query: Any, args: tuple[Any, ...]) -> Any:
        """Run one statement in this task's turn, inside the app's transaction if any."""
        await self._ready()
        verb = self._verb(query)
        if verb is not None:
            await self._control(verb)
            return 0
        if self._opens_transaction():
            await self._lease.abegin()
        async with self._lease.statement(query):
            return await self._io(fn(*args))

    async def _turn(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a call that talks to the server but sends no statement of the app's."""
        await self._ready()
        async with self._lease.turn():
            return await self._io(fn(*args))

    async def _control(self, verb: str) -> None:
        lease = self._lease
        if verb == "begin":
            await lease.acommit()  # MySQL's BEGIN commits an open transaction first
            await lease.abegin()
        elif verb == "commit":
            await lease.acommit()
        elif verb == "rollback":
            await lease.arollback()

    def _release_soon(self) -> Awaitable[None]:
        """Give the connection back without waiting: a rollback, if any, runs in a task."""
        if self._closed:
            return _DONE
        self._closed = True
        lease = self._lease
        if not lease.in_transaction:
            lease.close()  # nothing to roll back: no I/O
            return _DONE
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to run it on: the owner's checkin rolls it back
            return _DONE
        task = loop.create_task(lease.aclose(), name="sqlsandbox-aiomysql-release")
        pending = _PENDING.setdefault(lease.adapter, set())
        pending.add(task)
        task.add_done_callback(pending.discard)
        return task

    # -- the aiomysql.Connection interface ----------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def cursor(self, *cursors: Any) -> Opening:
        if self._closed:
            raise self._closed_error()
        from aiomysql.cursors import SSCursor

        if len(cursors) > 1:  # combined as aiomysql does: cursor(DictCursor, SSCursor)
            name = "".join(c.__name__ for c in cursors).replace("Cursor", "") + "Cursor"
            cls = type(name, cursors, {})
        else:
            cls = cursors[0] if cursors else self.cursorclass
        cursor = AsyncSandboxCursor(
            self, cls(self._raw, self._raw.echo), server_side=issubclass(cls, SSCursor)
        )
        return Opening(Ready(cursor), _close_cursor)

    async def query(self, sql: Any, unbuffered: bool = False) -> Any:
        return await self._run(self._raw.query, sql, (sql, unbuffered))

    async def begin(self) -> None:
        await self._ready()
        await self._control("begin")

    async def commit(self) -> None:
        await self._ready()
        await self._lease.acommit()

    async def rollback(self) -> None:
        await self._ready()
        await self._lease.arollback()

    async def autocommit(self, value: Any) -> None:
        await self._ready()
        if self._commits_on_autocommit(value):
            await self._lease.acommit()
        self.autocommit_mode = bool(value)

    def get_transaction_status(self) -> bool:
        return self._lease.in_transaction

    async def ping(self, reconnect: bool = True) -> None:
        await self._turn(self._raw.ping, False)

    async def select_db(self, db: Any) -> None:
        await self._ready()
        error = self._other_database(db)
        if error is not None:
            raise error

    async def show_warnings(self) -> Any:
        return await self._turn(self._raw.show_warnings)

    async def kill(self, thread_id: int) -> Any:
        return await self._turn(self._raw.kill, thread_id)

    def close(self) -> None:
        """Give the owner's connection back; a rollback of what it left open runs in a task."""
        self._release_soon()

    async def ensure_closed(self) -> None:
        """Give the owner's connection back, rolling back what this proxy left open."""
        if self._closed:
            return
        self._closed = True
        await self._lease.aclose()

    async def __aenter__(self) -> AsyncSandboxConnection:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        await _leave_connection(self, exc_type is not None)


async def _leave_connection(conn: Any, failed: bool) -> None:
    # Like aiomysql: close after an error, say goodbye otherwise.
    if failed:
        conn.close()
    else:
        await conn.ensure_closed()


async def _close_cursor(cursor: Any, failed: bool) -> None:
    await cursor.close()


class AsyncSandboxCursor(CursorProxy):
    """A real aiomysql cursor of the owner's connection; statements take turns."""

    __slots__ = ()
    _conn: AsyncSandboxConnection
    _cursor: Any

    async def execute(self, query: Any, args: Any = None) -> Any:
        return await self._conn._run(self._cursor.execute, query, (query, args))

    async def executemany(self, query: Any, args: Any) -> Any:
        return await self._conn._run(self._cursor.executemany, query, (query, args))

    async def callproc(self, procname: str, args: Any = ()) -> Any:
        return await self._conn._run(self._cursor.callproc, None, (procname, args))

    async def _fetch(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._server_side:
            return await self._conn._turn(fn, *args)
        # Buffered rows: aiomysql answers with a finished future of the connection's
        # loop, which may not be the caller's.
        return fn(*args).result()

    async def fetchone(self) -> Any:
        return await self._fetch(self._cursor.fetchone)

    async def fetchmany(self, size: int | None = None) -> Any:
        return await self._fetch(self._cursor.fetchmany, size)

    async def fetchall(self) -> Any:
        return await self._fetch(self._cursor.fetchall)

    async def scroll(self, value: int, mode: str = "relative") -> Any:
        return await self._fetch(self._cursor.scroll, value, mode)

    async def nextset(self) -> Any:
        return await self._conn._turn(self._cursor.nextset)

    async def close(self) -> None:
        if self._server_side and not self._conn._closed:
            await self._conn._turn(self._cursor.close)
        else:
            await self._cursor.close()

    def __aiter__(self) -> AsyncSandboxCursor:
        return self

    async def __anext__(self) -> Any:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    async def __aenter__(self) -> AsyncSandboxCursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cursor, name, value)


# -- the pool -------------------------------------------------------------------------


class SandboxPool:
    """What ``aiomysql.create_pool()`` returns for the routed database.

    It opens no connection: ``acquire()`` returns a proxy of the calling
    code's owner connection, and ``release()`` gives it back. Callers the
    sandbox lets use plain connections (auto mode, ``unboxed``) get them
    from a real pool made on first need.
    """

    def __init__(self, route: Route, pool_kwargs: dict[str, Any], kwargs: dict[str, Any]) -> None:
        self._route = route
        self._pool_kwargs = pool_kwargs
        self._kwargs = kwargs
        self._connector = AiomysqlConnector(kwargs)
        self._out: weakref.WeakSet[AsyncSandboxConnection] = weakref.WeakSet()
        self._plain: Any = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<sqlsandbox aiomysql pool for {self._route.database!r}>"

    @property
    def minsize(self) -> int:
        return int(self._pool_kwargs.get("minsize", 1))

    @property
    def maxsize(self) -> int:
        return int(self._pool_kwargs.get("maxsize", 10))

    @property
    def size(self) -> int:
        return len(self._out)

    @property
    def freesize(self) -> int:
        return 0

    @property
    def echo(self) -> bool:
        return bool(self._pool_kwargs.get("echo", False))

    @property
    def closed(self) -> bool:
        return self._closing

    def acquire(self) -> Opening:
        return Opening(self._acquire(), self._release_after)

    async def _acquire(self) -> Any:
        if self._closing:
            raise RuntimeError("Cannot acquire connection after closing pool")
        lease = await self._route.sandbox.alease(self._connector)
        if lease is None:  # auto mode or unboxed: a plain connection from a real pool
            if self._plain is None:
                self._plain = await _ORIGINAL["create_pool"](**self._pool_kwargs, **self._kwargs)
            return await self._plain.acquire()
        conn = AsyncSandboxConnection(lease, self._route, self._connector, self._kwargs, AKIND)
        self._out.add(conn)
        return conn

    def release(self, conn: Any) -> Awaitable[None]:
        """Give *conn* back (not a coroutine, as in aiomysql: awaiting it is optional)."""
        if isinstance(conn, AsyncSandboxConnection):
            self._out.discard(conn)
            return conn._release_soon()
        if self._plain is not None:
            return self._plain.release(conn)  # type: ignore[no-any-return]
        return _DONE

    async def _release_after(self, conn: Any, failed: bool) -> None:
        await self.release(conn)

    def close(self) -> None:
        """Refuse further acquires; the owners' connections stay with their owners."""
        self._closing = True
        if self._plain is not None:
            self._plain.close()

    def terminate(self) -> None:
        self._closing = True
        if self._plain is not None:
            self._plain.terminate()

    async def wait_closed(self) -> None:
        if self._plain is not None:
            await self._plain.wait_closed()

    async def clear(self) -> None:
        if self._plain is not None:
            await self._plain.clear()

    async def __aenter__(self) -> SandboxPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await _leave_pool(self, False)


async def _leave_pool(pool: Any, failed: bool) -> None:
    pool.close()
    await pool.wait_closed()


# -- patching ---------------------------------------------------------------------------


async def _connect_routed(route: Route, kwargs: dict[str, Any]) -> Any:
    connector = AiomysqlConnector(kwargs)
    lease = await route.sandbox.alease(connector)
    if lease is None:  # auto mode or unboxed: a plain connection, as the app asked
        return await _ORIGINAL["connect"](**kwargs)
    return AsyncSandboxConnection(lease, route, connector, kwargs, AKIND)


def connect(*args: Any, **kwargs: Any) -> Any:
    """Stand-in for ``aiomysql.connect``: the routed database gets the owner's connection."""
    if not internal_caller(sys._getframe(1)):
        if args:
            kwargs = {**dict(zip(_CONNECT_PARAMS, args, strict=False)), **kwargs}
            args = ()
        route = ROUTES.find(database_of(kwargs))
        if route is not None:
            return Opening(_connect_routed(route, kwargs), _leave_connection)
    return _ORIGINAL["connect"](*args, **kwargs)


def create_pool(
    minsize: int = 1,
    maxsize: int = 10,
    echo: bool = False,
    pool_recycle: int = -1,
    loop: Any = None,
    **kwargs: Any,
) -> Any:
    """Stand-in for ``aiomysql.create_pool``: the routed database gets a :class:`SandboxPool`."""
    pool_kwargs = {
        "minsize": minsize,
        "maxsize": maxsize,
        "echo": echo,
        "pool_recycle": pool_recycle,
        "loop": loop,
    }
    if not internal_caller(sys._getframe(1)):
        route = ROUTES.find(database_of(kwargs))
        if route is not None:
            return Opening(Ready(SandboxPool(route, pool_kwargs, kwargs)), _leave_pool)
    return _ORIGINAL["create_pool"](**pool_kwargs, **kwargs)


def apply(routes: Routes) -> None:
    """Patch ``aiomysql.connect`` and ``aiomysql.create_pool`` (and names imported from them)."""
    import aiomysql

    _ORIGINAL["connect"] = aiomysql.connect
    _ORIGINAL["create_pool"] = aiomysql.create_pool
    _CONNECT_PARAMS[:] = list(inspect.signature(aiomysql.connect).parameters)
    skip = ("aiomysql",)
    routes.patch_references(aiomysql.connect, connect, skip=skip)
    routes.patch_references(aiomysql.create_pool, create_pool, skip=skip)
    routes.patch(aiomysql, "connect", connect)
    routes.patch(aiomysql, "create_pool", create_pool)
