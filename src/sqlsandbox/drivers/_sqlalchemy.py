"""Route an existing SQLAlchemy Engine or AsyncEngine through a Sandbox.

The app built its engine at import time and keeps it; ``install`` swaps the
engine's pool for a :class:`SandboxPool`. Each checkout from that pool asks
the sandbox for the calling code's owner connection and hands the app a
:class:`~._sqlalchemy_proxy.SandboxConnection` on it; in auto mode or
``unboxed`` it falls through to the original pool. New connections for
owners are made by the original pool's machinery, so the dialect's connect
events (codecs, ``on_connect``, the app's own listeners) still run.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sqlalchemy.pool import Pool
from sqlalchemy.pool.base import _ConnectionRecord
from sqlalchemy.util.concurrency import greenlet_spawn

from .._exceptions import ConfigError
from .._urls import DatabaseURL
from ._loops import at_loop_end, watch_adapter
from ._sqlalchemy_adapters import adapter_class, connection_kind
from ._sqlalchemy_proxy import SandboxConnection

try:  # SQLAlchemy 2.1
    from sqlalchemy.util.concurrency import await_
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util.concurrency import await_only as await_

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

    from ..ownership import Lease, Sandbox

__all__ = [
    "EngineConnector",
    "SandboxPool",
    "close_at_loop_end",
    "install",
    "is_installed",
    "uninstall",
]

#: ``record.info`` key: which connection of the record a loop-end callback closes.
_LOOP_MARK = "sqlsandbox_loop_end"


class EngineConnector:
    """Open owner connections the way the engine's original pool would."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect
        self.kind = connection_kind(dialect)
        self.is_async = bool(dialect.is_async)
        self._adapter = adapter_class(dialect)
        self.loop_bound: bool = getattr(self._adapter, "loop_bound", False)

    def __repr__(self) -> str:
        return f"<EngineConnector {self.kind} {self.engine.url!r}>"

    def _original(self) -> Pool:
        pool = self.engine.pool
        return pool.original if isinstance(pool, SandboxPool) else pool

    def connect(self) -> Any:
        record = self._original()._create_connection()
        try:
            return self._adapter(record, self.engine.dialect)
        except BaseException:
            record.close()
            raise

    async def aconnect(self) -> Any:
        record = await greenlet_spawn(self._original()._create_connection)
        try:
            adapter: Any = self._adapter(record, self.engine.dialect)
            await adapter.prepare()
        except BaseException:
            await greenlet_spawn(record.close)
            raise
        if adapter.loop is not None:
            watch_adapter(adapter)
        return adapter


class _SyncConnector:
    is_async: ClassVar[Literal[False]] = False

    def __init__(self, engine_connector: EngineConnector) -> None:
        self.kind = engine_connector.kind
        self.connect = engine_connector.connect


class _AsyncConnector:
    is_async: ClassVar[Literal[True]] = True

    def __init__(self, engine_connector: EngineConnector) -> None:
        self.kind = engine_connector.kind
        self.loop_bound = engine_connector.loop_bound
        self.connect = engine_connector.aconnect


class _SandboxRecord(_ConnectionRecord):
    """A pool entry on the owner's connection; returning it ends the lease."""

    def __init__(self, pool: SandboxPool, lease: Lease) -> None:
        super().__init__(pool, connect=False)
        self.dbapi_connection: SandboxConnection = SandboxConnection(
            lease, is_async=pool.is_async, renew=pool.owner_lease
        )
        self.starttime = time.time()
        # Fresh records skip the pool's pre-ping: the owner's connection is in use.
        self.fresh = True

    def get_connection(self) -> DBAPIConnection:
        return self.dbapi_connection

    def invalidate(self, e: BaseException | None = None, soft: bool = False) -> None:
        # Only this checkout ends; a broken owner connection is noticed (and
        # reported) by the ownership layer on its next use.
        if soft or self.dbapi_connection is None:
            return
        self.dbapi_connection.release()
        self.dbapi_connection = None  # type: ignore[assignment]

    def close(self) -> None:
        if self.dbapi_connection is not None:
            self.dbapi_connection.release()


class SandboxPool(Pool):
    """A pool that serves the calling code's sandboxed owner connection.

    Everything else (auto mode, ``unboxed``) goes to the pool the engine had
    before, available as :attr:`original`.
    """

    def __init__(self, original: Pool, sandbox: Sandbox, connector: EngineConnector) -> None:
        super().__init__(
            original._creator,
            echo=original.echo,
            logging_name=original._orig_logging_name,
            reset_on_return=original._reset_on_return,
            dialect=original._dialect,
            pre_ping=original._pre_ping,
            _dispatch=original.dispatch,
        )
        self.original = original
        self.sandbox = sandbox
        self.engine_connector = connector
        self.is_async = connector.is_async
        self._sync_connector = _SyncConnector(connector)
        self._async_connector = _AsyncConnector(connector)

    def owner_lease(self) -> Lease | None:
        """Lease the calling code's owner connection; None in auto mode or ``unboxed``."""
        if not self.is_async:
            return self.sandbox.lease(self._sync_connector)
        found = self.sandbox.lease_nowait(self._async_connector)
        if found is False:
            return await_(self.sandbox.alease(self._async_connector))
        return found

    def _do_get(self) -> ConnectionPoolEntry:
        lease = self.owner_lease()
        if lease is None:
            return self.original._do_get()
        return _SandboxRecord(self, lease)

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if isinstance(record, _SandboxRecord):
            if record.dbapi_connection is not None:
                record.dbapi_connection.release()
        else:
            self.original._do_return_conn(record)

    def recreate(self) -> SandboxPool:
        return SandboxPool(self.original.recreate(), self.sandbox, self.engine_connector)

    def dispose(self) -> None:
        self.original.dispose()

    def status(self) -> str:
        return f"SandboxPool(sandbox={self.sandbox.name}) over {self.original.status()}"

    def __getattr__(self, name: str) -> Any:
        # QueuePool.size(), checkedout()... of the pool the app configured.
        if name == "original":
            raise AttributeError(name)
        return getattr(self.original, name)


def _sync_engine(engine: Any) -> Engine:
    return getattr(engine, "sync_engine", engine)  # type: ignore[no-any-return]


def _same_database(engine: Engine, url: DatabaseURL) -> bool:
    database = engine.url.database
    if url.backend == "sqlite" or engine.dialect.name == "sqlite":
        import os

        if not database or not url.database:
            return database == url.database
        return os.path.realpath(database) == os.path.realpath(url.database)
    return database == url.database


def install(engine: Any, sandbox: Sandbox) -> None:
    """Route *engine* (an ``Engine`` or ``AsyncEngine``) through *sandbox*.

    From now on every connection the engine hands out (Core connections,
    ORM sessions, ``engine.begin()``) is the calling code's owner
    connection, with the app's transactions as savepoints. Installing twice
    on the same sandbox does nothing.
    """
    sync_engine = _sync_engine(engine)
    current = sync_engine.pool
    if isinstance(current, SandboxPool):
        if current.sandbox is sandbox:
            return
        raise ConfigError(
            f"Engine {sync_engine.url!r} is already routed through sandbox "
            f"{current.sandbox.name}; uninstall it first."
        )
    if sandbox.url is not None and not _same_database(sync_engine, sandbox.url):
        raise ConfigError(
            f"Engine {sync_engine.url!r} points at database {sync_engine.url.database!r}, "
            f"but sandbox {sandbox.name} serves {sandbox.url.database!r}: a test transaction "
            "cannot cover two databases. Point the app at the test database (the "
            "`url_env` setting sets its environment variable before the app is imported)."
        )
    if sync_engine.dialect.name == "sqlite" and sync_engine.url.database in (None, "", ":memory:"):
        raise ConfigError(
            f"Engine {sync_engine.url!r} uses an in-memory SQLite database, which exists "
            "only inside one connection; the sandbox opens connections of its own. Use a "
            "file database (sqlite:///path/test.db)."
        )
    connector = EngineConnector(sync_engine)
    pool = SandboxPool(current, sandbox, connector)
    sync_engine.pool = pool
    sandbox.add_connector(pool._async_connector if connector.is_async else pool._sync_connector)


def uninstall(engine: Any) -> None:
    """Give *engine* back its original pool; connections checked out stay valid."""
    sync_engine = _sync_engine(engine)
    pool = sync_engine.pool
    if isinstance(pool, SandboxPool):
        sync_engine.pool = pool.original
        pool.sandbox.remove_connector(pool._async_connector)
        pool.sandbox.remove_connector(pool._sync_connector)


def is_installed(engine: Any, sandbox: Sandbox | None = None) -> bool:
    """Return whether *engine* is routed (through *sandbox*, when given)."""
    pool = _sync_engine(engine).pool
    return isinstance(pool, SandboxPool) and (sandbox is None or pool.sandbox is sandbox)


def close_at_loop_end(engine: Any) -> None:
    """Close what *engine* connected on an event loop when that loop shuts down.

    For plain (unrouted) engines of loop-bound drivers whose connections may
    outlive their loop: a session that a synchronous fixture closes after the
    test's loop is gone, for example. Each connection still open then is
    invalidated while its loop runs, which closes it politely; the pool and
    its checkouts see an invalidated connection and do no further I/O.
    """
    from sqlalchemy import event

    def connected(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        mark = object()
        record.info[_LOOP_MARK] = mark
        ref = weakref.ref(record)

        async def close() -> None:
            found = ref()
            if (
                found is not None
                and found.dbapi_connection is not None
                and found.info.get(_LOOP_MARK) is mark
            ):
                await greenlet_spawn(found.invalidate)

        at_loop_end(close)

    event.listen(_sync_engine(engine).pool, "connect", connected)
