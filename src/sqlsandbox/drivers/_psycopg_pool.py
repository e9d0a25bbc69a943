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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

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
    from ..ownership import Lease
    from ._direct import Route, Routes

__all__ = ["apply"]


class _Routed:
    """What a routed pool of either kind holds, and how it takes over the pool (no I/O).

    Subclasses are the blocking and asyncio twins; their ``getconn``,
    ``putconn``, ``connection`` and ``nothing`` replace the pool's methods.
    """

    #: Pool methods that become harmless: the pool never has connections of its own.
    NO_OPS = ("open", "close", "wait", "check", "resize", "drain")
    connector_class: ClassVar[type[Any]]
    nothing: Callable[..., Any]

    def __init__(
        self,
        route: Route,
        conninfo: str,
        connection_class: Any,
        kwargs: dict[str, Any],
        configure: Any,
    ) -> None:
        self.route = route
        self.conninfo = conninfo
        self.connection_class = connection_class
        self.kwargs = kwargs
        self.configure = configure
        self.connector = self.connector_class(connection_class, conninfo, kwargs)
        self._configured: weakref.WeakSet[Any] = weakref.WeakSet()

    def first_use(self, lease: Lease) -> bool:
        """Return whether ``configure`` must run: once per owner connection."""
        if self.configure is None or lease.raw in self._configured:
            return False
        self._configured.add(lease.raw)
        return True

    def take_over(self, pool: Any) -> None:
        # Instance attributes shadow the class's methods for this pool only.
        methods: dict[str, Any] = dict.fromkeys(self.NO_OPS, self.nothing)
        for name in ("getconn", "putconn", "connection"):
            methods[name] = getattr(self, name)
        methods["get_stats"] = methods["pop_stats"] = dict
        for name, fn in methods.items():
            object.__setattr__(pool, name, fn)
        object.__setattr__(pool, "_sqlsandbox_routed", True)


class _SyncRouted(_Routed):
    connector_class = PsycopgConnector

    def getconn(self, timeout: float | None = None) -> Any:
        lease = self.route.sandbox.lease(self.connector)
        if lease is None:  # auto mode or unboxed: a plain connection
            return self.connection_class.connect(self.conninfo, **self.kwargs)
        conn = SandboxConnection(lease, self.route, self.connector, self.kwargs, KIND)
        if self.first_use(lease):
            self.configure(conn)
            if conn._lease.in_transaction:  # psycopg_pool wants configure to leave it idle
                conn.commit()
        return conn

    def putconn(self, conn: Any) -> None:
        if isinstance(conn, SandboxConnection):
            conn._give_back()
        else:
            conn.close()

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        conn = self.getconn(timeout)
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
            self.putconn(conn)

    def nothing(self, *args: Any, **kwargs: Any) -> None:
        return None


class _AsyncRouted(_Routed):
    connector_class = AsyncPsycopgConnector

    async def getconn(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - psycopg_pool API
        lease = await self.route.sandbox.alease(self.connector)
        if lease is None:
            return await self.connection_class.connect(self.conninfo, **self.kwargs)
        conn = AsyncSandboxConnection(lease, self.route, self.connector, self.kwargs, AKIND)
        if self.first_use(lease):
            await self.configure(conn)
            if conn._lease.in_transaction:
                await conn.commit()
        return conn

    async def putconn(self, conn: Any) -> None:
        if isinstance(conn, AsyncSandboxConnection):
            await conn._give_back()
        else:
            await conn.close()

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:  # noqa: ASYNC109
        conn = await self.getconn(timeout)
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
            await self.putconn(conn)

    async def nothing(self, *args: Any, **kwargs: Any) -> None:
        return None


def _patched_init(original: Any, make: Any) -> Any:
    def __init__(self: Any, conninfo: str = "", *args: Any, **options: Any) -> None:
        kwargs = dict(options.get("kwargs") or {})
        route = ROUTES.find(database_of(conninfo, kwargs))
        if route is not None:
            options["open"] = False
            original(self, conninfo, *args, **options)
            connection_class = options.get("connection_class") or self.connection_class
            routed = make(route, conninfo, connection_class, kwargs, options.get("configure"))
            routed.take_over(self)
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
        (psycopg_pool.ConnectionPool, _SyncRouted),
        (psycopg_pool.AsyncConnectionPool, _AsyncRouted),
    ):
        routes.patch(cls, "__init__", _patched_init(vars(cls)["__init__"], make))
