"""psycopg 3 used directly, blocking and asyncio, in a sandbox.

``psycopg.connect()`` / ``psycopg.Connection.connect()`` and
``psycopg.AsyncConnection.connect()`` aimed at the routed database return
proxies of the calling code's owner connection. psycopg's own transaction
model is kept: without ``autocommit`` the first statement opens the app's
transaction (a savepoint) and ``commit()`` / ``rollback()`` end it;
``conn.transaction()`` blocks nest as savepoints; with ``autocommit`` each
statement runs in a savepoint of its own so a failing one does not abort the
test's transaction. ``close()`` (and leaving ``with conn:``) gives the
connection back. The asyncio proxy lives in :mod:`._psycopg_async`,
pools in :mod:`._psycopg_pool`.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..ownership import AsyncSQLAdapter, SQLAdapter
from ._direct import (
    CursorProxy,
    Proxy,
    Route,
    Routes,
    control_verb,
    internal_caller,
    require_database,
)
from ._libpq import LibpqStatements

if TYPE_CHECKING:
    from ..ownership import Lease, Sandbox

__all__ = [
    "AKIND",
    "KIND",
    "SandboxConnection",
    "install",
    "is_installed",
    "uninstall",
]

KIND = "psycopg"
AKIND = "psycopg:async"
#: connect() arguments that shape the app's view, not the server connection.
_PROXY_ONLY = ("autocommit", "row_factory", "cursor_factory")
_ORIGINAL: dict[str, Any] = {}


def database_of(conninfo: str, kwargs: dict[str, Any]) -> str | None:
    """Return the database a psycopg connect call aims at, as libpq resolves it."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo) if conninfo else {}
    except Exception:  # let psycopg report a malformed conninfo itself
        return None
    database = kwargs.get("dbname") or params.get("dbname") or os.environ.get("PGDATABASE")
    if database:
        return str(database)
    user = kwargs.get("user") or params.get("user") or os.environ.get("PGUSER")
    return str(user) if user else getpass.getuser()


# -- ownership adapters and connectors ----------------------------------------------


class PsycopgAdapter(LibpqStatements, SQLAdapter):
    """A blocking psycopg connection in autocommit mode (the sandbox sends BEGIN)."""

    multi_statement = True

    def __init__(self, raw: Any) -> None:
        super().__init__(raw, kind=KIND, dialect="postgresql")
        self.use_libpq()

    def close(self) -> None:
        self.raw.close()

    def interrupt(self) -> None:
        self.raw.cancel_safe(timeout=5)


class AsyncPsycopgAdapter(AsyncSQLAdapter):
    """An asyncio psycopg connection; it works from any event loop."""

    multi_statement = True

    def __init__(self, raw: Any) -> None:
        super().__init__(raw, kind=AKIND, dialect="postgresql")

    async def execute(self, sql: str) -> None:
        await self.raw.execute(sql)

    def in_transaction(self) -> bool:
        return bool(self.raw.pgconn.transaction_status != 0)

    def is_broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    async def close(self) -> None:
        await self.raw.close()

    def discard(self) -> None:
        self.raw.pgconn.finish()

    def interrupt(self) -> None:
        # libpq's cancel request is thread-safe and needs no event loop.
        self.raw.pgconn.get_cancel().cancel()


def _server_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in _PROXY_ONLY}


class PsycopgConnector:
    """Open the owner's blocking connection with the app's connect arguments."""

    is_async: ClassVar[Literal[False]] = False
    kind = KIND

    def __init__(self, cls: Any, conninfo: str, kwargs: dict[str, Any]) -> None:
        self.cls = cls
        self.conninfo = conninfo
        self.kwargs = _server_kwargs(kwargs)

    def connect(self) -> PsycopgAdapter:
        raw = _ORIGINAL["sync"](self.cls, self.conninfo, autocommit=True, **self.kwargs)
        return PsycopgAdapter(raw)


class AsyncPsycopgConnector:
    """Open the owner's asyncio connection with the app's connect arguments."""

    is_async: ClassVar[Literal[True]] = True
    kind = AKIND
    loop_bound = False

    def __init__(self, cls: Any, conninfo: str, kwargs: dict[str, Any]) -> None:
        self.cls = cls
        self.conninfo = conninfo
        self.kwargs = _server_kwargs(kwargs)

    async def connect(self) -> AsyncPsycopgAdapter:
        raw = await _ORIGINAL["async"](self.cls, self.conninfo, autocommit=True, **self.kwargs)
        return AsyncPsycopgAdapter(raw)


# -- what the blocking and asyncio proxies share (no I/O) -------------------------------


class ProxyBase(Proxy):
    __slots__ = (
        "_blocks",
        "_pipeline",
        "_settings",
        "_wrap",
        "autocommit",
        "row_factory",
    )

    def __init__(
        self, lease: Lease, route: Route, connector: Any, kwargs: dict[str, Any], kind: str
    ) -> None:
        super().__init__(lease, route, connector, kind)
        self._wrap = route.statement_savepoints and lease.sandboxed
        #: Open ``transaction()`` blocks, innermost last.
        self._blocks: list[Any] = []
        self._pipeline = 0
        # Transaction settings the app sees; the server connection stays in the test's transaction.
        self._settings: dict[str, Any] = {
            "isolation_level": None,
            "read_only": None,
            "deferrable": None,
        }
        self.autocommit: bool = bool(kwargs.get("autocommit", False))
        self.row_factory: Any = kwargs.get("row_factory") or self._raw.row_factory

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "autocommit" and hasattr(self, "_lease") and self._in_transaction():
            import psycopg

            raise psycopg.ProgrammingError(
                "can't change 'autocommit' now: connection in transaction status INTRANS"
            )
        if name in ("isolation_level", "read_only", "deferrable"):
            self._settings[name] = value
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        settings = object.__getattribute__(self, "_settings")
        if name in settings:
            return settings[name]
        return getattr(self._raw, name)

    def _in_transaction(self) -> bool:
        return bool(self._blocks) or self._lease.in_transaction

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def broken(self) -> bool:
        return bool(self._raw.broken)

    def _closed_error(self) -> Exception:
        import psycopg

        return psycopg.OperationalError("the connection is closed")

    def _commit_forbidden(self, verb: str) -> Exception:
        import psycopg

        return psycopg.ProgrammingError(
            f"Explicit {verb}() forbidden within a Transaction context. (Transaction "
            "will be automatically committed on successful exit from context.)"
        )

    def _cursor_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("row_factory") is None:
            kwargs["row_factory"] = self.row_factory
        return kwargs


def swallow(block: Any, exc: BaseException | None) -> bool:
    import psycopg

    return isinstance(exc, psycopg.Rollback) and exc.transaction in (None, block)


# -- blocking ---------------------------------------------------------------------------


class SandboxConnection(ProxyBase):
    """An owner's blocking psycopg connection as one ``connect()`` of the app sees it."""

    __slots__ = ()

    def _fork(self) -> Lease:
        lease = self._route.sandbox.lease(self._connector)
        if lease is None or lease.adapter is not self._lease.adapter:
            raise self._check.error(self._lease)
        lease.nest_in(self._blocks[-1]._lease if self._blocks else self._lease)
        return lease

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a statement in this caller's turn, inside the app's transaction if any."""
        if self._closed or not self._check.ok():
            self._denied()
        lease = self._lease
        query = args[0]
        if type(query) is str:
            verb = control_verb(query)
            if verb is not None:
                self._control(verb)
                return None
        wrap = False
        if not self._blocks and not lease.in_transaction:
            if not self.autocommit:
                lease.begin()  # psycopg opens a transaction before the first statement
            elif self._wrap and not self._pipeline:
                wrap = True
        with lease.statement(query, noted_by=self._blocks[-1]._lease if self._blocks else None):
            if not wrap:
                return fn(*args, **kwargs)
            lease.begin()
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                lease.rollback()
                raise
            lease.commit()
            return result

    def _turn(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a call that reads from the server (a server-side cursor) in a turn."""
        if self._closed or not self._check.ok():
            self._denied()
        with self._lease.turn():
            return fn(*args)

    def _control(self, verb: str) -> None:
        lease = self._lease
        if verb == "begin":
            if not lease.in_transaction:
                lease.begin()
        elif verb == "commit":
            lease.commit()
        elif verb == "rollback":
            lease.rollback()

    # -- the psycopg.Connection interface -------------------------------------------

    def cursor(self, *args: Any, **kwargs: Any) -> SandboxCursor:
        if self._closed:
            raise self._closed_error()
        cursor = self._raw.cursor(*args, **self._cursor_kwargs(kwargs))
        return SandboxCursor(self, cursor, server_side=bool(args and args[0]) or "name" in kwargs)

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool = False
    ) -> SandboxCursor:
        return self.cursor(binary=binary).execute(query, params, prepare=prepare)

    def commit(self) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        if self._blocks:
            raise self._commit_forbidden("commit")
        self._lease.commit()

    def rollback(self) -> None:
        if self._closed or not self._check.ok():
            self._denied()
        if self._blocks:
            raise self._commit_forbidden("rollback")
        self._lease.rollback()

    @contextmanager
    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> Iterator[SandboxTransaction]:
        """Run the block in a savepoint; it commits (is released) unless it raises."""
        if self._closed or not self._check.ok():
            self._denied()
        lease = self._fork()
        lease.begin()
        block = SandboxTransaction(self, savepoint_name, lease)
        self._blocks.append(block)
        try:
            yield block
        except BaseException as exc:
            self._end_block(block, lease, commit=False)
            if swallow(block, exc):
                return
            raise
        self._end_block(block, lease, commit=not force_rollback)

    def _end_block(self, block: Any, lease: Lease, *, commit: bool) -> None:
        if block in self._blocks:
            self._blocks.remove(block)
        if commit:
            lease.commit()
        else:
            lease.rollback()

    @contextmanager
    def _held(self) -> Iterator[None]:
        """Hold the turn (and the app's transaction) for a pipeline, COPY or stream."""
        if self._closed or not self._check.ok():
            self._denied()
        lease = self._lease
        if not self.autocommit and not self._in_transaction():
            lease.begin()
        with lease.turn(check=True):
            yield

    @contextmanager
    def pipeline(self) -> Iterator[Any]:
        """Hold the turn for the whole pipeline (no per-statement savepoints inside)."""
        with self._held():
            self._pipeline += 1
            try:
                with self._raw.pipeline() as pipeline:
                    yield pipeline
            finally:
                self._pipeline -= 1

    def set_autocommit(self, value: bool) -> None:
        self.autocommit = bool(value)

    def set_isolation_level(self, value: Any) -> None:
        self._settings["isolation_level"] = value

    def set_read_only(self, value: Any) -> None:
        self._settings["read_only"] = value

    def set_deferrable(self, value: Any) -> None:
        self._settings["deferrable"] = value

    def close(self) -> None:
        """Give the owner's connection back, rolling back what this proxy left open."""
        self._give_back()

    def _give_back(self) -> None:
        if self._closed:
            return
        self._closed = True
        blocks, self._blocks = self._blocks, []
        for block in reversed(blocks):
            block._lease.close()
        self._lease.close()

    def __enter__(self) -> SandboxConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if self._closed:
            return
        if self._check.ok():
            if exc_type is None:
                self.commit()
            else:
                self.rollback()
        self.close()


class SandboxTransaction:
    """What ``with conn.transaction() as tx`` binds: the block, for ``psycopg.Rollback(tx)``."""

    __slots__ = ("_lease", "connection", "savepoint_name")

    def __init__(self, connection: Any, savepoint_name: str | None, lease: Lease) -> None:
        self.connection = connection
        self.savepoint_name = savepoint_name
        self._lease = lease


class SandboxCursor(CursorProxy):
    """A real cursor of the owner's connection; statements take turns on the proxy."""

    __slots__ = ()
    _conn: SandboxConnection
    _cursor: Any

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> SandboxCursor:
        self._conn._run(self._cursor.execute, (query, params), kwargs)
        return self

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        self._conn._run(self._cursor.executemany, (query, params_seq), kwargs)

    @contextmanager
    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        with self._conn._held(), self._cursor.copy(statement, params, **kwargs) as copy:
            yield copy

    def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        with self._conn._held():
            yield from self._cursor.stream(query, params, **kwargs)

    def _fetch(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self._server_side:
            return fn(*args)
        return self._conn._turn(fn, *args)

    def fetchone(self) -> Any:
        return self._fetch(self._cursor.fetchone)

    def fetchmany(self, *args: Any) -> Any:
        return self._fetch(self._cursor.fetchmany, *args)

    def fetchall(self) -> Any:
        return self._fetch(self._cursor.fetchall)

    def scroll(self, *args: Any) -> Any:
        return self._fetch(self._cursor.scroll, *args)

    def __iter__(self) -> Iterator[Any]:
        if not self._server_side:
            return iter(self._cursor)
        return iter(self.fetchone, None)

    def close(self) -> None:
        self._fetch(self._cursor.close)

    def __enter__(self) -> SandboxCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- patching ---------------------------------------------------------------------------


def _connect_routed(cls: Any, route: Route, conninfo: str, kwargs: dict[str, Any]) -> Any:
    connector = PsycopgConnector(cls, conninfo, kwargs)
    lease = route.sandbox.lease(connector)
    if lease is None:  # auto mode or unboxed: a plain connection, as the app asked
        return _ORIGINAL["sync"](cls, conninfo, **kwargs)
    return SandboxConnection(lease, route, connector, kwargs, KIND)


async def _aconnect_routed(cls: Any, route: Route, conninfo: str, kwargs: dict[str, Any]) -> Any:
    connector = AsyncPsycopgConnector(cls, conninfo, kwargs)
    lease = await route.sandbox.alease(connector)
    if lease is None:
        return await _ORIGINAL["async"](cls, conninfo, **kwargs)
    from ._psycopg_async import AsyncSandboxConnection

    return AsyncSandboxConnection(lease, route, connector, kwargs, AKIND)


def _connect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
    """Stand-in for ``psycopg.Connection.connect``: routed databases get the owner's connection."""
    if not internal_caller(sys._getframe(1)):
        route = ROUTES.find(database_of(conninfo, kwargs))
        if route is not None:
            return _connect_routed(cls, route, conninfo, kwargs)
    return _ORIGINAL["sync"](cls, conninfo, **kwargs)


def _aconnect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
    """Stand-in for ``psycopg.AsyncConnection.connect`` (returns the coroutine to await)."""
    if not internal_caller(sys._getframe(1)):
        route = ROUTES.find(database_of(conninfo, kwargs))
        if route is not None:
            return _aconnect_routed(cls, route, conninfo, kwargs)
    return _ORIGINAL["async"](cls, conninfo, **kwargs)


def _apply(routes: Routes) -> None:
    import psycopg

    _ORIGINAL["sync"] = vars(psycopg.Connection)["connect"].__func__
    _ORIGINAL["async"] = vars(psycopg.AsyncConnection)["connect"].__func__
    old_module_connect = psycopg.connect
    routes.patch(psycopg.Connection, "connect", classmethod(_connect))
    routes.patch(psycopg.AsyncConnection, "connect", classmethod(_aconnect))
    new_module_connect = psycopg.Connection.connect
    routes.patch_references(old_module_connect, new_module_connect, skip=("psycopg",))
    routes.patch(psycopg, "connect", new_module_connect)
    from . import _psycopg_pool

    _psycopg_pool.apply(routes)


ROUTES = Routes("psycopg", _apply)


def install(
    sandbox: Sandbox, *, database: str | None = None, statement_savepoints: bool = True
) -> None:
    """Route the app's psycopg connections and pools for *database* through *sandbox*.

    Patches ``psycopg.connect``, ``psycopg.Connection.connect``,
    ``psycopg.AsyncConnection.connect`` and, when psycopg_pool is installed,
    ``ConnectionPool`` / ``AsyncConnectionPool``. *database* defaults to the
    database of the sandbox URL. With ``statement_savepoints`` (the default)
    a statement an autocommit connection runs outside any transaction gets a
    savepoint of its own, so a failing one does not abort the test's transaction.
    """
    name = require_database(sandbox, database, "psycopg")
    route = Route(sandbox, name, statement_savepoints=statement_savepoints)
    ROUTES.add(route, lambda: _defaults(sandbox))


def _defaults(sandbox: Sandbox) -> list[Any]:
    """The asyncio connector for acheckout(), the blocking one for checkout()."""
    url = sandbox.url
    if url is None or url.backend != "postgresql":
        return []
    import psycopg

    dsn = url.with_scheme("postgresql").render()
    return [
        AsyncPsycopgConnector(psycopg.AsyncConnection, dsn, {}),
        PsycopgConnector(psycopg.Connection, dsn, {}),
    ]


def uninstall(sandbox: Sandbox | None = None) -> None:
    """Stop routing for *sandbox* (every sandbox if None); the last one restores psycopg."""
    ROUTES.remove(sandbox)


def is_installed(sandbox: Sandbox | None = None) -> bool:
    return ROUTES.installed(sandbox)
