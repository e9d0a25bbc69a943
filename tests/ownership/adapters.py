"""Thin adapters over real drivers, the way a driver module implements the protocol.

The ownership layer imports no driver; these let its tests run against real
servers without depending on the drivers package.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from typing import Any, ClassVar, Literal

import asyncpg
import psycopg
import pymysql
from psycopg.pq import TransactionStatus

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.ownership import AsyncSQLAdapter, SQLAdapter, abort_transport, shutdown_socket


class PsycopgAdapter(SQLAdapter):
    multi_statement = True

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        super().__init__(raw, kind="test:psycopg", dialect="postgresql")

    def execute(self, sql: str) -> None:
        self.raw.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    def is_broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    def close(self) -> None:
        self.raw.close()

    def interrupt(self) -> None:
        try:
            self.raw.cancel_safe(timeout=5)
        finally:
            shutdown_socket(self.raw.pgconn.socket)


class PsycopgConnector:
    is_async: ClassVar[Literal[False]] = False
    kind = "test:psycopg"

    def __init__(self, url: DatabaseURL) -> None:
        self.dsn = url.with_scheme("postgresql").render()
        self.opened = 0

    def connect(self) -> PsycopgAdapter:
        self.opened += 1
        return PsycopgAdapter(psycopg.connect(self.dsn, autocommit=True))


class SQLiteAdapter(SQLAdapter):
    def __init__(self, raw: sqlite3.Connection) -> None:
        super().__init__(raw, kind="test:sqlite3", dialect="sqlite")

    def execute(self, sql: str) -> None:
        self.raw.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.in_transaction)

    def is_broken(self) -> bool:
        try:
            self.raw.total_changes  # noqa: B018 - raises ProgrammingError once closed
        except sqlite3.ProgrammingError:
            return True
        return False

    def close(self) -> None:
        self.raw.close()

    def interrupt(self) -> None:
        self.raw.interrupt()


class SQLiteConnector:
    is_async: ClassVar[Literal[False]] = False
    kind = "test:sqlite3"

    def __init__(self, url: DatabaseURL) -> None:
        assert url.database is not None
        self.path = url.database
        self.opened = 0

    def connect(self) -> SQLiteAdapter:
        self.opened += 1
        raw = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        return SQLiteAdapter(raw)


class PyMySQLAdapter(SQLAdapter):
    def __init__(self, raw: Any) -> None:
        super().__init__(raw, kind="test:pymysql", dialect="mysql")

    def execute(self, sql: str) -> None:
        self.raw.query(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.server_status & pymysql.constants.SERVER_STATUS.SERVER_STATUS_IN_TRANS)

    def is_broken(self) -> bool:
        return not self.raw.open

    def close(self) -> None:
        if self.raw.open:
            self.raw.close()

    def interrupt(self) -> None:
        sock = self.raw._sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


class PyMySQLConnector:
    is_async: ClassVar[Literal[False]] = False
    kind = "test:pymysql"

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url
        self.opened = 0

    def connect(self) -> PyMySQLAdapter:
        self.opened += 1
        url = self.url
        raw = pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
            database=url.database,
            autocommit=True,
        )
        return PyMySQLAdapter(raw)


class AsyncpgAdapter(AsyncSQLAdapter):
    multi_statement = True

    def __init__(self, raw: asyncpg.Connection) -> None:
        super().__init__(raw, kind="test:asyncpg", dialect="postgresql")
        self.loop = asyncio.get_running_loop()

    async def execute(self, sql: str) -> None:
        await self.raw.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.is_in_transaction())

    def is_broken(self) -> bool:
        return bool(self.raw.is_closed())

    async def close(self) -> None:
        await self.raw.close()

    def discard(self) -> None:
        if not self.raw.is_closed():
            abort_transport(self.raw._transport)
            self.raw.terminate()


class AsyncpgConnector:
    is_async: ClassVar[Literal[True]] = True
    kind = "test:asyncpg"
    loop_bound = True

    def __init__(self, url: DatabaseURL) -> None:
        self.dsn = url.with_scheme("postgresql").render()
        self.opened = 0

    async def connect(self) -> AsyncpgAdapter:
        self.opened += 1
        return AsyncpgAdapter(await asyncpg.connect(self.dsn))


class AsyncPsycopgAdapter(AsyncSQLAdapter):
    """psycopg's AsyncConnection works from any event loop (not loop-bound)."""

    multi_statement = True

    def __init__(self, raw: psycopg.AsyncConnection[Any]) -> None:
        super().__init__(raw, kind="test:psycopg-async", dialect="postgresql")

    async def execute(self, sql: str) -> None:
        await self.raw.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    def is_broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    async def close(self) -> None:
        await self.raw.close()

    def discard(self) -> None:
        self.raw.pgconn.finish()

    def interrupt(self) -> None:
        shutdown_socket(self.raw.pgconn.socket)


class AsyncPsycopgConnector:
    is_async: ClassVar[Literal[True]] = True
    kind = "test:psycopg-async"
    loop_bound = False

    def __init__(self, url: DatabaseURL) -> None:
        self.dsn = url.with_scheme("postgresql").render()

    async def connect(self) -> AsyncPsycopgAdapter:
        return AsyncPsycopgAdapter(await psycopg.AsyncConnection.connect(self.dsn, autocommit=True))
