"""The connection-adapter protocol: what a driver gives the ownership layer.

The ownership layer never imports a database driver. A driver describes how
to open one of its connections (a *connector*) and how to run the handful of
transaction commands the sandbox needs on it (an *adapter*). Sync and async
twins have the same method names; the async ones are coroutines.

Most drivers only implement :meth:`SQLAdapter.execute` (or the async twin)
and inherit the SQL for BEGIN / SAVEPOINT / RELEASE / ROLLBACK TO of their
dialect from the base classes here, which also merge several commands into
one round trip when the driver accepts several statements in one call.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from .._exceptions import ConfigError
from . import _reset

__all__ = [
    "AsyncAdapter",
    "AsyncConnector",
    "AsyncSQLAdapter",
    "Connector",
    "SQLAdapter",
    "SyncAdapter",
]

#: Isolation levels the sandbox knows how to request after BEGIN.
ISOLATION_LEVELS = ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")


def normalize_isolation_level(level: str | None) -> str | None:
    """Return *level* in upper case with single spaces, or raise ConfigError."""
    if level is None:
        return None
    norm = " ".join(level.replace("_", " ").upper().split())
    if norm not in ISOLATION_LEVELS:
        raise ConfigError(
            f"Unknown isolation level {level!r}: use one of {', '.join(ISOLATION_LEVELS)} "
            "(Sandbox(isolation_level=...) or checkout(isolation_level=...))."
        )
    return norm


@runtime_checkable
class SyncAdapter(Protocol):
    """One open driver connection, seen by the sandbox (blocking twin).

    ``kind`` names what the connection is, for example
    ``"sqlalchemy:postgresql+psycopg"`` or ``"asyncpg"``: only a driver asking
    for the same kind may join an owner's connection. ``raw`` is whatever the
    driver hands to the application. ``dialect`` is ``"postgresql"``,
    ``"mysql"`` or ``"sqlite"`` and selects the SQL and the checks (MariaDB
    DDL, deferred constraints).
    """

    kind: str
    dialect: str
    raw: Any

    def begin(self, isolation_level: str | None) -> None:
        """Open the outer transaction, with *isolation_level* right after BEGIN.

        Adapters with ``resets = True`` (the base classes here) also take
        ``snapshot=True`` (record the sequence baseline first) and
        ``restore=True`` (put sequences back to it first).
        """

    def commit(self) -> None:
        """Commit the outer transaction (only for ``sandbox=False`` owners)."""

    def rollback(self) -> None:
        """Roll back the outer transaction and drop session leftovers (locks).

        Adapters with ``resets = True`` also take ``sequences=`` (restore
        sequences to the baseline) and ``session=`` (undo session state).
        """

    def savepoint(self, name: str) -> None:
        """Create savepoint *name*."""

    def release(self, name: str) -> None:
        """Release savepoint *name* (and every later one)."""

    def rollback_to(self, name: str, release: str | None) -> None:
        """Roll back to savepoint *name*, then release savepoint *release* if given."""

    def check_deferred(self, *, keep: bool) -> None:
        """Check deferred constraints now; with ``keep=False`` leave no trace."""

    def in_transaction(self) -> bool | None:
        """Return whether the server says a transaction is open, or None if unknown."""

    def is_broken(self) -> bool:
        """Return whether the connection is closed or unusable (no I/O)."""

    def close(self) -> None:
        """Close the connection; never raise."""

    def interrupt(self) -> None:
        """Abort an operation running in another thread; the connection is then discarded.

        Must be safe to call from any thread and never raise.
        """


@runtime_checkable
class AsyncAdapter(Protocol):
    """One open driver connection, seen by the sandbox (asyncio twin).

    Same as :class:`SyncAdapter`, with coroutines for everything that does
    I/O. ``loop`` is the event loop the connection is tied to (asyncpg,
    aiomysql) or None when it can be used from any loop (psycopg, aiosqlite).
    ``discard`` closes without I/O and must be called on ``loop`` when set.
    """

    kind: str
    dialect: str
    raw: Any
    loop: asyncio.AbstractEventLoop | None

    async def begin(self, isolation_level: str | None) -> None: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...
    async def savepoint(self, name: str) -> None: ...
    async def release(self, name: str) -> None: ...
    async def rollback_to(self, name: str, release: str | None) -> None: ...
    async def check_deferred(self, *, keep: bool) -> None: ...
    def in_transaction(self) -> bool | None: ...
    def is_broken(self) -> bool: ...
    async def close(self) -> None: ...
    def discard(self) -> None: ...
    def interrupt(self) -> None: ...


class Connector(Protocol):
    """Open new blocking connections of one kind for the sandbox."""

    kind: str
    is_async: ClassVar[Literal[False]] = False

    def connect(self) -> SyncAdapter:
        """Open a connection in autocommit mode (the sandbox sends BEGIN itself)."""


class AsyncConnector(Protocol):
    """Open new asyncio connections of one kind for the sandbox."""

    kind: str
    is_async: ClassVar[Literal[True]] = True
    #: True when connections are tied to the event loop that opened them.
    loop_bound: bool

    async def connect(self) -> AsyncAdapter:
        """Open a connection in autocommit mode (the sandbox sends BEGIN itself)."""


# -- SQL of each dialect ---------------------------------------------------------


def _quote_name(name: str) -> str:
    # Savepoint names are generated by the sandbox or the app's driver; refuse
    # anything that would need quoting rather than quote per dialect.
    if not name.replace("_", "").isalnum():
        raise ValueError(f"invalid savepoint name {name!r}")
    return name


def begin_sql(dialect: str, isolation_level: str | None) -> list[str]:
    """Return the statements that open the outer transaction."""
    if dialect == "mysql":
        if isolation_level:
            return [f"SET TRANSACTION ISOLATION LEVEL {isolation_level}", "START TRANSACTION"]
        return ["START TRANSACTION"]
    if dialect == "sqlite":
        if isolation_level not in (None, "SERIALIZABLE"):
            raise ConfigError(
                f"SQLite runs every transaction SERIALIZABLE; isolation level {isolation_level!r} "
                "is not available. Drop isolation_level=... from Sandbox(...) / checkout(...) "
                "for SQLite."
            )
        return ["BEGIN"]
    if isolation_level:
        return [f"BEGIN ISOLATION LEVEL {isolation_level}"]
    return ["BEGIN"]


def rollback_sql(dialect: str) -> list[str]:
    """Return the statements that end the outer transaction and clean the session."""
    if dialect == "postgresql":
        # Session advisory locks survive ROLLBACK and would block the next test.
        return ["ROLLBACK", "SELECT pg_catalog.pg_advisory_unlock_all()"]
    return ["ROLLBACK"]


def rollback_to_sql(name: str, release: str | None) -> list[str]:
    """Return ROLLBACK TO *name*, then RELEASE *release* if given."""
    stmts = [f"ROLLBACK TO SAVEPOINT {_quote_name(name)}"]
    if release is not None:
        stmts.append(f"RELEASE SAVEPOINT {_quote_name(release)}")
    return stmts


_DEFERRED_SP = "sqlsandbox_deferred"


def check_deferred_sql(dialect: str, *, keep: bool) -> tuple[list[str], list[str]]:
    """Return (statements, cleanup after failure) that check deferred constraints."""
    if dialect != "postgresql":
        return [], []
    if keep:
        return ["SET CONSTRAINTS ALL IMMEDIATE"], []
    # Inside a savepoint that is rolled back, PostgreSQL checks the pending
    # deferred events and then restores both them and the constraint modes.
    undo = [f"ROLLBACK TO SAVEPOINT {_DEFERRED_SP}", f"RELEASE SAVEPOINT {_DEFERRED_SP}"]
    return [f"SAVEPOINT {_DEFERRED_SP}", "SET CONSTRAINTS ALL IMMEDIATE", *undo], undo


class _SQLBase:
    kind: str
    dialect: str
    raw: Any
    #: Whether one call may carry several statements (one round trip).
    multi_statement: ClassVar[bool] = False
    #: begin() takes ``snapshot=`` and rollback() ``sequences=`` / ``session=``.
    resets: ClassVar[bool] = True
    #: Set by the sandbox: the epoch of this session's sequence baseline, or None.
    snapshot_epoch: int | None = None
    #: PostgreSQL: the statements the checkin executes are prepared on this session.
    reset_ready: bool = False
    #: The batches of BEGIN and checkin once reset_ready: the same few every time.
    _batch_cache: dict[tuple[Any, ...], list[str]] | None = None

    def __init__(self, raw: Any, *, kind: str, dialect: str) -> None:
        if dialect not in ("postgresql", "mysql", "sqlite"):
            raise ConfigError(
                f"sqlsandbox cannot sandbox {dialect!r} databases: "
                "PostgreSQL, MariaDB/MySQL and SQLite are supported."
            )
        self.raw = raw
        self.kind = kind
        self.dialect = dialect

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}>"

    def _batches(self, stmts: list[str]) -> list[str]:
        if self.multi_statement and len(stmts) > 1:
            return ["; ".join(stmts)]
        return stmts

    def _begin_batch(self, isolation_level: str | None, restore: bool) -> list[str]:
        """Return the calls that open the outer transaction (see begin())."""
        key = ("begin", isolation_level, restore)
        cache = self._batch_cache if self.reset_ready else None
        batch = cache.get(key) if cache is not None else None
        if batch is None:
            stmts = begin_sql(self.dialect, isolation_level)
            batch = self._batches(_reset.begin_sql(self, stmts, restore=restore))
            if self.reset_ready:
                self._remember(key, batch)
        return batch

    def _checkin_batch(self, sequences: bool, session: bool) -> list[str]:
        """Return the calls that end the outer transaction and undo what the test left."""
        key = ("checkin", sequences, session)
        cache = self._batch_cache if self.reset_ready else None
        batch = cache.get(key) if cache is not None else None
        if batch is None:
            stmts = _reset.checkin_sql(self, sequences=sequences, session=session)
            batch = self._batches(stmts)
            if self.reset_ready:
                self._remember(key, batch)
        return batch

    def _remember(self, key: tuple[Any, ...], batch: list[str]) -> None:
        # Only in the steady state: before our statements are prepared (first
        # BEGIN, after a recovery) the batches differ.
        if self._batch_cache is None:
            self._batch_cache = {}
        self._batch_cache[key] = batch

    def in_transaction(self) -> bool | None:
        return None


class SQLAdapter(_SQLBase, abc.ABC):
    """A :class:`SyncAdapter` built on one primitive: run a statement, ignore rows.

    Subclasses implement :meth:`execute`, :meth:`is_broken`, :meth:`close`
    and :meth:`interrupt`; set ``multi_statement = True`` when the driver
    runs ``"A; B"`` in one round trip without parameters.
    """

    @abc.abstractmethod
    def execute(self, sql: str) -> None:
        """Run *sql* (no parameters, rows discarded); raise the driver's error."""

    @abc.abstractmethod
    def is_broken(self) -> bool: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def interrupt(self) -> None:
        """Abort an operation running in another thread (best effort)."""

    def _run(self, stmts: list[str]) -> None:
        for sql in self._batches(stmts):
            self.execute(sql)

    def begin(
        self, isolation_level: str | None, *, snapshot: bool = False, restore: bool = False
    ) -> None:
        if snapshot:
            if self.dialect == "postgresql" and not hasattr(self, "no_xml"):
                try:
                    self.execute(_reset.XML_PROBE)
                    self.no_xml = False
                except Exception:
                    self.no_xml = True
            self._run(_reset.snapshot_sql(self.dialect))
        for sql in self._begin_batch(isolation_level, restore):
            self.execute(sql)
        self.reset_ready = True

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self, *, sequences: bool = False, session: bool = False) -> None:
        try:
            for sql in self._checkin_batch(sequences, session):
                self.execute(sql)
        except Exception as exc:
            if self.is_broken():
                raise
            self._run(_reset.recovery_sql(self, exc, sequences=sequences, session=session))

    def savepoint(self, name: str) -> None:
        self.execute(f"SAVEPOINT {_quote_name(name)}")

    def release(self, name: str) -> None:
        self.execute(f"RELEASE SAVEPOINT {_quote_name(name)}")

    def rollback_to(self, name: str, release: str | None) -> None:
        self._run(rollback_to_sql(name, release))

    def check_deferred(self, *, keep: bool) -> None:
        stmts, undo = check_deferred_sql(self.dialect, keep=keep)
        try:
            self._run(stmts)
        except BaseException:
            if undo and not self.is_broken():
                self._run(undo)
            raise


class AsyncSQLAdapter(_SQLBase, abc.ABC):
    """An :class:`AsyncAdapter` built on one primitive: ``await execute(sql)``."""

    loop: asyncio.AbstractEventLoop | None = None

    @abc.abstractmethod
    async def execute(self, sql: str) -> None:
        """Run *sql* (no parameters, rows discarded); raise the driver's error."""

    @abc.abstractmethod
    def is_broken(self) -> bool: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def discard(self) -> None:
        """Close without I/O (on ``loop`` when set); never raise."""

    def interrupt(self) -> None:
        """Abort an operation in progress; defaults to :meth:`discard`."""
        self.discard()

    async def _run(self, stmts: list[str]) -> None:
        for sql in self._batches(stmts):
            await self.execute(sql)

    async def begin(
        self, isolation_level: str | None, *, snapshot: bool = False, restore: bool = False
    ) -> None:
        if snapshot:
            if self.dialect == "postgresql" and not hasattr(self, "no_xml"):
                try:
                    await self.execute(_reset.XML_PROBE)
                    self.no_xml = False
                except Exception:
                    self.no_xml = True
            await self._run(_reset.snapshot_sql(self.dialect))
        for sql in self._begin_batch(isolation_level, restore):
            await self.execute(sql)
        self.reset_ready = True

    async def commit(self) -> None:
        await self.execute("COMMIT")

    async def rollback(self, *, sequences: bool = False, session: bool = False) -> None:
        try:
            for sql in self._checkin_batch(sequences, session):
                await self.execute(sql)
        except Exception as exc:
            if self.is_broken():
                raise
            await self._run(_reset.recovery_sql(self, exc, sequences=sequences, session=session))

    async def savepoint(self, name: str) -> None:
        await self.execute(f"SAVEPOINT {_quote_name(name)}")

    async def release(self, name: str) -> None:
        await self.execute(f"RELEASE SAVEPOINT {_quote_name(name)}")

    async def rollback_to(self, name: str, release: str | None) -> None:
        await self._run(rollback_to_sql(name, release))

    async def check_deferred(self, *, keep: bool) -> None:
        stmts, undo = check_deferred_sql(self.dialect, keep=keep)
        try:
            await self._run(stmts)
        except BaseException:
            if undo and not self.is_broken():
                await self._run(undo)
            raise
