"""psycopg_pool's ConnectionPool and AsyncConnectionPool for a routed database.

Apps usually import the pool classes by name at import time, so the classes'
``__init__`` is patched rather than the module attribute: a pool made for the
routed database is built closed (``open=False``, no worker threads, no
connections) and its instance gets methods that hand out proxies of the
calling code's owner connection. ``open()``, ``close()``, ``wait()`` and
friends are harmless no-ops; pools for other databases are untouched.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from ._psycopg import (
    AKIND,
    KIND,
    ROUTES,
    AsyncPsycopgConnector,
    PsycopgConnector,
    SandboxConnection,
    database_of,
)
from ._psycopg_async import AsyncSandboxConnection

if TYPE_CHECKING:
    from ._direct import Route, Routes

__all__ = ["apply"]


def _sync_pool(
    pool: Any,
    route: Route,
    conninfo: str,
    connection_class: Any,
    kwargs: dict[str, Any],
    configure: Any,
) -> None:
    connector = PsycopgConnector(connection_class, conninfo, kwargs)
    configured: weakref.WeakSet[Any] = weakref.WeakSet()
    sandbox = route.sandbox

    def getconn(timeout: float | None = None) -> Any:
        lease = sandbox.lease(connector)
        if lease is None:  # auto mode or unboxed: a plain connection
            return connection_class.connect(conninfo, **kwargs)
        conn = SandboxConnection(lease, route, connector, kwargs, KIND)
        if configure is not None and lease.raw not in configured:
            configured.add(lease.raw)
            configure(conn)
            if conn._lease.in_transaction:  # psycopg_pool wants configure to leave it idle
                conn.commit()
        return conn

    def putconn(conn: Any) -> None:
        if isinstance(conn, SandboxConnection):
            conn._give_back()
        else:
            conn.close()

    @contextmanager
    def connection(timeout: float | None = None) -> Iterator[Any]:
        conn = getconn(timeout)
        try:
            try:
                yield conn
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise
            if not conn.closed:
                conn.commit()
        finally:
            putconn(conn)

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    _set(
        pool,
        getconn=getconn,
        putconn=putconn,
        connection=connection,
        open=nothing,
        close=nothing,
        wait=nothing,
        check=nothing,
        resize=nothing,
        drain=nothing,
        get_stats=dict,
        pop_stats=dict,
    )


def _async_pool(
    pool: Any,
    route: Route,
    conninfo: str,
    connection_class: Any,
    kwargs: dict[str, Any],
    configure: Any,
) -> None:
    connector = AsyncPsycopgConnector(connection_class, conninfo, kwargs)
    configured: weakref.WeakSet[Any] = weakref.WeakSet()
    sandbox = route.sandbox

    async def getconn(timeout: float | None = None) -> Any:  # noqa: ASYNC109 - psycopg_pool API
        lease = await sandbox.alease(connector)
        if lease is None:
            return await connection_class.connect(conninfo, **kwargs)
        conn = AsyncSandboxConnection(lease, route, connector, kwargs, AKIND)
        if configure is not None and lease.raw not in configured:
            configured.add(lease.raw)
            await configure(conn)
            if conn._lease.in_transaction:
                await conn.commit()
        return conn

    async def putconn(conn: Any) -> None:
        if isinstance(conn, AsyncSandboxConnection):
            await conn._give_back()
        else:
            await conn.close()

    @asynccontextmanager
    async def connection(timeout: float | None = None) -> AsyncIterator[Any]:  # noqa: ASYNC109
        conn = await getconn(timeout)
        try:
            try:
                yield conn
            except BaseException:
                if not conn.closed:
                    await conn.rollback()
                raise
            if not conn.closed:
                await conn.commit()
        finally:
            await putconn(conn)

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    _set(
        pool,
        getconn=getconn,
        putconn=putconn,
        connection=connection,
        open=nothing,
        close=nothing,
        wait=nothing,
        check=nothing,
        resize=nothing,
        drain=nothing,
        get_stats=dict,
        pop_stats=dict,
    )


def _set(pool: Any, **methods: Any) -> None:
    # Instance attributes shadow the class's methods for this pool only.
    for name, fn in methods.items():
        object.__setattr__(pool, name, fn)
    object.__setattr__(pool, "_sqlsandbox_routed", True)


def _patched_init(original: Any, make: Any) -> Any:
    def __init__(self: Any, conninfo: str = "", *args: Any, **options: Any) -> None:
        kwargs = dict(options.get("kwargs") or {})
        route = ROUTES.find(database_of(conninfo, kwargs))
        if route is not None:
            options["open"] = False
            original(self, conninfo, *args, **options)
            connection_class = options.get("connection_class") or self.connection_class
            make(self, route, conninfo, connection_class, kwargs, options.get("configure"))
            return
        original(self, conninfo, *args, **options)

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


def apply(routes: Routes) -> None:
    """Patch the pool classes, when psycopg_pool is installed."""
    try:
        import psycopg_pool
    except ImportError:
        return
    for cls, make in (
        (psycopg_pool.ConnectionPool, _sync_pool),
        (psycopg_pool.AsyncConnectionPool, _async_pool),
    ):
        routes.patch(cls, "__init__", _patched_init(vars(cls)["__init__"], make))
