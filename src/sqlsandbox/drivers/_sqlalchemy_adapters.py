"""Ownership adapters for the connections of SQLAlchemy engines, one per DBAPI.

An adapter wraps one DBAPI connection made by the engine's own dialect (so
``connect_args``, codecs and connect events apply as usual). At creation it
puts the driver in autocommit, so that only the sandbox sends BEGIN, and
remembers the transaction settings the app saw (``autocommit``,
``isolation_level``...), which the proxy the app talks to then fakes.

Transaction commands go to the driver connection directly, in one round trip
where the driver takes several statements at once (psycopg, psycopg2,
asyncpg).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, ClassVar

from .._exceptions import ConfigError
from ..ownership import AsyncSQLAdapter, SQLAdapter, abort_transport, shutdown_socket
from ._libpq import LibpqStatements
from ._mysql import arollback_on_timeout, rollback_on_timeout
from ._sqlite import SQLiteStatements

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import Dialect
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["adapter_class", "connection_kind", "dialect_family"]

#: App-visible transaction settings of a connection, faked by the proxy.
Virtual = dict[str, Any]


def dialect_family(dialect: Dialect) -> str:
    """Return ``"postgresql"``, ``"mysql"`` or ``"sqlite"`` for *dialect*."""
    name = dialect.name
    if name in ("mysql", "mariadb"):
        return "mysql"
    return name


def connection_kind(dialect: Dialect) -> str:
    """Name what connections of *dialect* are; equal kinds can share an owner."""
    suffix = ":async" if dialect.is_async else ""
    return f"sqlalchemy:{dialect.name}+{dialect.driver}{suffix}"


class _Settings:
    """How one DBAPI exposes transaction settings, and which of them mean autocommit."""

    #: Attributes the app may read and set (defaults are read from the connection).
    attributes: ClassVar[tuple[str, ...]] = ()
    #: Setter methods: method name -> attribute it sets.
    setters: ClassVar[dict[str, str]] = {}

    virtual: Virtual
    record: ConnectionPoolEntry

    def read_virtual(self, dbapi: Any) -> Virtual:
        return {name: getattr(dbapi, name, None) for name in self.attributes}

    @staticmethod
    def is_autocommit(virtual: Virtual) -> bool:
        return bool(virtual.get("autocommit"))


# -- blocking drivers ------------------------------------------------------------------


class _SyncAdapter(_Settings, SQLAdapter):
    def __init__(self, record: ConnectionPoolEntry, dialect: Dialect) -> None:
        self.record = record
        dbapi = record.dbapi_connection
        super().__init__(dbapi, kind=connection_kind(dialect), dialect=dialect_family(dialect))
        self.driver: Any = record.driver_connection
        self.virtual = self.read_virtual(dbapi)
        self.prepare()

    def prepare(self) -> None:
        """Put the driver in autocommit mode (the sandbox sends BEGIN itself)."""

    def close(self) -> None:
        try:
            self.record.close()
        except Exception:  # closing a broken connection can fail in driver-specific ways
            pass


class PsycopgAdapter(LibpqStatements, _SyncAdapter):
    """psycopg 3, blocking."""

    multi_statement = True
    attributes = ("autocommit", "isolation_level", "read_only", "deferrable")

    def prepare(self) -> None:
        conn = self.raw
        if conn.pgconn.transaction_status != 0:  # not IDLE: the connect events left one open
            conn.rollback()
        conn.autocommit = True
        self.use_libpq()

    def interrupt(self) -> None:
        _cancel_and_shut(self.raw.pgconn)


def _cancel_and_shut(pgconn: Any) -> None:
    """Stop a psycopg query in progress, wherever it stands.

    The cancel request frees the server (a query it already runs); shutting
    the socket down wakes the client even when the query has not arrived yet,
    which a cancel alone would miss. Both are thread-safe.
    """
    try:
        pgconn.get_cancel().cancel()
    except Exception:  # the server may be gone already
        pass
    finally:
        if pgconn.socket >= 0:
            shutdown_socket(pgconn.socket)


class Psycopg2Adapter(_SyncAdapter):
    """psycopg2."""

    multi_statement = True
    attributes = ("autocommit", "isolation_level", "readonly", "deferrable")
    setters: ClassVar[dict[str, str]] = {"set_isolation_level": "isolation_level"}

    @staticmethod
    def is_autocommit(virtual: Virtual) -> bool:
        # psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT is 0.
        return bool(virtual.get("autocommit")) or virtual.get("isolation_level") == 0

    def prepare(self) -> None:
        conn = self.raw
        if conn.get_transaction_status() != 0:
            conn.rollback()
        conn.autocommit = True

    def execute(self, sql: str) -> None:
        with self.raw.cursor() as cur:
            cur.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.get_transaction_status() != 0)

    def is_broken(self) -> bool:
        return bool(self.raw.closed)

    def interrupt(self) -> None:
        try:
            self.raw.cancel()
        finally:
            shutdown_socket(self.raw.fileno())


class PySQLiteAdapter(SQLiteStatements, _SyncAdapter):
    """The standard library's sqlite3."""

    attributes = ("isolation_level",)

    @staticmethod
    def is_autocommit(virtual: Virtual) -> bool:
        return virtual.get("isolation_level") is None

    def prepare(self) -> None:
        if self.raw.in_transaction:
            self.raw.rollback()
        self.raw.isolation_level = None


class PyMySQLAdapter(_SyncAdapter):
    """PyMySQL on MariaDB or MySQL."""

    setters: ClassVar[dict[str, str]] = {"autocommit": "autocommit"}

    def read_virtual(self, dbapi: Any) -> Virtual:
        return {"autocommit": bool(dbapi.get_autocommit())}

    #: Whether error 1205 rolls back the whole transaction (read when the connection opens).
    rollback_on_timeout = False

    def prepare(self) -> None:
        self.raw.rollback()
        self.raw.autocommit(True)
        self.rollback_on_timeout = rollback_on_timeout(self.raw)

    def execute(self, sql: str) -> None:
        self.raw.query(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.server_status & 1)  # SERVER_STATUS_IN_TRANS

    def is_broken(self) -> bool:
        return not self.raw.open

    def interrupt(self) -> None:
        sock = getattr(self.raw, "_sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


# -- asyncio drivers -----------------------------------------------------------------


class _AsyncAdapter(_Settings, AsyncSQLAdapter):
    #: Whether connections only work on the event loop that opened them.
    loop_bound: ClassVar[bool] = False

    def __init__(self, record: ConnectionPoolEntry, dialect: Dialect) -> None:
        import asyncio

        self.record = record
        dbapi = record.dbapi_connection
        super().__init__(dbapi, kind=connection_kind(dialect), dialect=dialect_family(dialect))
        self.driver: Any = record.driver_connection
        self.virtual = self.read_virtual(dbapi)
        self.loop = asyncio.get_running_loop() if self.loop_bound else None

    async def prepare(self) -> None:
        """Put the driver in autocommit mode (the sandbox sends BEGIN itself)."""

    async def close(self) -> None:
        from sqlalchemy.util.concurrency import greenlet_spawn

        try:
            await greenlet_spawn(self.record.close)
        except Exception:
            self.discard()


class AsyncpgAdapter(_AsyncAdapter):
    """asyncpg, through SQLAlchemy's adapter."""

    multi_statement = True
    loop_bound = True
    attributes = ("isolation_level", "readonly", "deferrable")
    setters: ClassVar[dict[str, str]] = {"set_isolation_level": "isolation_level"}

    @staticmethod
    def is_autocommit(virtual: Virtual) -> bool:
        return virtual.get("isolation_level") == "autocommit"

    async def prepare(self) -> None:
        # The adapter then never opens asyncpg transactions of its own.
        self.raw.autocommit = True

    async def execute(self, sql: str) -> None:
        await self.driver.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.driver.is_in_transaction())

    def is_broken(self) -> bool:
        return bool(self.driver.is_closed())

    def discard(self) -> None:
        driver = self.driver
        if not driver.is_closed():
            abort_transport(getattr(driver, "_transport", None))
            driver.terminate()


class PsycopgAsyncAdapter(_AsyncAdapter):
    """psycopg 3's AsyncConnection, which works from any event loop."""

    multi_statement = True
    attributes = ("autocommit", "isolation_level", "read_only", "deferrable")
    setters: ClassVar[dict[str, str]] = {
        "set_autocommit": "autocommit",
        "set_isolation_level": "isolation_level",
        "set_read_only": "read_only",
        "set_deferrable": "deferrable",
    }

    async def prepare(self) -> None:
        conn = self.driver
        if conn.pgconn.transaction_status != 0:
            await conn.rollback()
        await conn.set_autocommit(True)

    async def execute(self, sql: str) -> None:
        await self.driver.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.driver.pgconn.transaction_status != 0)

    def is_broken(self) -> bool:
        return bool(self.driver.closed or self.driver.broken)

    def discard(self) -> None:
        self.driver.pgconn.finish()

    def interrupt(self) -> None:
        _cancel_and_shut(self.driver.pgconn)


def _sqlite_autocommit(driver: Any) -> None:
    driver._conn.isolation_level = None


def _sqlite_execute(driver: Any, sql: str) -> None:
    driver._conn.execute(sql)


class AiosqliteAdapter(_AsyncAdapter):
    """aiosqlite: sqlite3 in a worker thread, usable from any event loop."""

    attributes = ("isolation_level",)

    @staticmethod
    def is_autocommit(virtual: Virtual) -> bool:
        return virtual.get("isolation_level") is None

    async def prepare(self) -> None:
        # The worker thread lives as long as the sandbox keeps the connection,
        # across tests: name it as ours for leak detection.
        thread = getattr(self.driver, "_thread", None)
        if thread is not None:
            thread.name = f"sqlsandbox-aiosqlite-{thread.ident}"
        # In aiosqlite's thread: sqlite3 objects belong to the thread that made them.
        if self.driver.in_transaction:
            await self.driver.rollback()
        await self.driver._execute(_sqlite_autocommit, self.driver)

    async def execute(self, sql: str) -> None:
        await self.driver._execute(_sqlite_execute, self.driver, sql)

    def in_transaction(self) -> bool:
        return bool(self.driver.in_transaction)

    def is_broken(self) -> bool:
        return self.driver._connection is None

    def discard(self) -> None:
        self.driver.stop()

    def interrupt(self) -> None:
        conn = self.driver._connection
        if conn is not None:
            conn.interrupt()


class AiomysqlAdapter(_AsyncAdapter):
    """aiomysql on MariaDB or MySQL."""

    loop_bound = True
    setters: ClassVar[dict[str, str]] = {"autocommit": "autocommit"}

    def read_virtual(self, dbapi: Any) -> Virtual:
        return {"autocommit": bool(self.driver.get_autocommit())}

    #: Whether error 1205 rolls back the whole transaction (read when the connection opens).
    rollback_on_timeout = False

    async def prepare(self) -> None:
        await self.driver.rollback()
        await self.driver.autocommit(True)
        self.rollback_on_timeout = await arollback_on_timeout(self.driver)

    async def execute(self, sql: str) -> None:
        await self.driver.query(sql)

    def in_transaction(self) -> bool:
        return bool(self.driver.server_status & 1)  # SERVER_STATUS_IN_TRANS

    def is_broken(self) -> bool:
        return bool(self.driver.closed)

    def discard(self) -> None:
        writer = getattr(self.driver, "_writer", None)
        abort_transport(writer.transport if writer is not None else None)
        try:
            self.driver.close()
        except RuntimeError:  # its event loop is closed; the socket is closed already
            pass


_ADAPTERS: dict[tuple[str, bool], type[_SyncAdapter] | type[_AsyncAdapter]] = {
    ("psycopg", False): PsycopgAdapter,
    ("psycopg2", False): Psycopg2Adapter,
    ("pysqlite", False): PySQLiteAdapter,
    ("pymysql", False): PyMySQLAdapter,
    ("asyncpg", True): AsyncpgAdapter,
    ("psycopg", True): PsycopgAsyncAdapter,
    ("aiosqlite", True): AiosqliteAdapter,
    ("aiomysql", True): AiomysqlAdapter,
}


def adapter_class(dialect: Dialect) -> type[_SyncAdapter] | type[_AsyncAdapter]:
    """Return the adapter for *dialect*'s DBAPI, or raise ConfigError naming the supported ones."""
    found = _ADAPTERS.get((dialect.driver, bool(dialect.is_async)))
    if found is None or dialect_family(dialect) not in ("postgresql", "mysql", "sqlite"):
        supported = ", ".join(
            f"{name}{' (async)' if is_async else ''}" for name, is_async in _ADAPTERS
        )
        raise ConfigError(
            f"sqlsandbox cannot route a SQLAlchemy engine using {dialect.name}+{dialect.driver}"
            f"{' (async)' if dialect.is_async else ''}: supported DBAPIs are {supported}. "
            "Switch the test URL to one of them, or use "
            '@pytest.mark.sandbox(isolation="database") for these tests.'
        )
    return found
