"""The DBAPI connection and cursor an app's engine sees while it is routed.

:class:`SandboxConnection` stands in for the DBAPI connection inside
SQLAlchemy's pool. It hands out the owner's real cursors wrapped in
:class:`SandboxCursor`, which opens the app's transaction lazily as a
SAVEPOINT before the first statement and takes a turn on the owner's
connection around each call. ``commit()`` / ``rollback()`` become RELEASE /
ROLLBACK TO. Each statement goes through the same
:meth:`~sqlsandbox.ownership.Lease.statement` steps as the direct drivers' statements,
which may put a savepoint before it and roll back to it when it fails, so that
sessions of one owner that overlap do not undo each other's work. Transaction settings
the app changes (``autocommit``, isolation level...) are remembered here
instead of reaching the driver, whose connection stays inside the test's
transaction.

For asyncio engines everything runs in SQLAlchemy's greenlet, where
coroutines are awaited with ``await_``. When the owner's connection lives on
the sandbox's host loop (a loop-bound driver used from a TestClient thread),
every driver call is shipped there in a greenlet of its own.

A pool checkout may outlive its owner: a Core ``Connection`` kept in a module
global or a module-scoped fixture is used by test after test. When its
owner has ended, the next cursor takes a new lease from the calling code's
owner (``renew``), so the Connection continues on the current test's
connection. If the app had a transaction open when the owner ended, that
transaction was rolled back with the test: statements raise an
OwnershipError until the app rolls back, as after any transaction the
server aborted, so the app's Transaction object cannot carry on silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.util.concurrency import greenlet_spawn, in_greenlet

from .._exceptions import DOCS, OwnershipError
from ..ownership import Lease, transaction_control

try:  # SQLAlchemy 2.1
    from sqlalchemy.util.concurrency import await_
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util.concurrency import await_only as await_

if TYPE_CHECKING:
    from ..ownership import HostLoop

__all__ = ["SandboxConnection", "SandboxCursor"]

#: Takes a new lease for the calling code's owner; None when it has none.
Renew = Callable[[], "Lease | None"]


class SandboxConnection:
    """The owner's DBAPI connection as one pool checkout of the app sees it."""

    __slots__ = (
        "_aborted",
        "_async",
        "_autocommit",
        "_dbapi",
        "_host",
        "_is_autocommit",
        "_lease",
        "_renew",
        "_virtual",
    )

    def __init__(self, lease: Lease, *, is_async: bool, renew: Renew | None = None) -> None:
        adapter = lease.adapter
        setattr_ = object.__setattr__
        setattr_(self, "_async", is_async)
        setattr_(self, "_renew", renew)
        setattr_(self, "_aborted", None)
        self._use(lease)
        setattr_(self, "_virtual", dict(adapter.virtual))
        setattr_(self, "_is_autocommit", adapter.is_autocommit)
        setattr_(self, "_autocommit", adapter.is_autocommit(adapter.virtual))

    def _use(self, lease: Lease) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "_lease", lease)
        setattr_(self, "_dbapi", lease.raw)
        setattr_(self, "_host", lease.host)

    def _follow_owner(self) -> None:
        """Move to the calling code's owner once this lease's owner has ended."""
        lease = self._lease
        renew = self._renew
        if renew is None:
            return
        new = renew()
        if new is None or not new.usable:
            return  # no owner, or its connection was lost: the statement says which
        if lease.lost_transaction:
            object.__setattr__(self, "_aborted", lease.owner_name)
        self._use(new)

    def aborted_error(self) -> OwnershipError:
        return OwnershipError(
            f"This SQLAlchemy connection had a transaction open in {self._aborted!r}, which "
            "ended: the transaction was rolled back with that test, so its statements and "
            "its Transaction object are void. Call rollback() on the connection to continue "
            "on the current test's connection. Better: open connections inside each test "
            "(`with engine.connect() as conn:`) or in a function-scoped fixture, or commit "
            f"or roll back before a test ends. See {DOCS}/troubleshooting/#drivers"
        )

    def __repr__(self) -> str:
        return f"<SandboxConnection {self._lease!r}>"

    # -- driver calls --------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a driver method, on the host loop when the connection lives there."""
        host: HostLoop | None = self._host
        if host is None:
            return fn(*args)
        return await_(host.run(greenlet_spawn(fn, *args)))

    def _enter(self) -> None:
        lease = self._lease
        if self._async:
            if not lease.enter_nowait():
                await_(lease.aenter())
        else:
            lease.enter()

    def _begin(self) -> None:
        if self._async:
            await_(self._lease.abegin())
        else:
            self._lease.begin()

    def _end(self, *, commit: bool) -> None:
        lease = self._lease
        if not lease.in_transaction:
            return
        if self._async:
            await_(lease.acommit() if commit else lease.arollback())
        elif commit:
            lease.commit()
        else:
            lease.rollback()

    # -- the DBAPI connection interface -------------------------------------------

    def cursor(self, *args: Any, **kwargs: Any) -> SandboxCursor:
        if not self._lease.usable:
            self._follow_owner()
        if not self._lease.usable:
            # The connection may be closed: no real cursor. The first statement
            # raises the ownership error (SQLAlchemy would wrap one raised here).
            return SandboxCursor(self, None, server_side=False)
        if self._host is None:
            cursor = self._dbapi.cursor(*args, **kwargs)
        else:
            cursor = self._call(lambda: self._dbapi.cursor(*args, **kwargs))
        return SandboxCursor(self, cursor, server_side=bool(args or kwargs))

    def commit(self) -> None:
        if self._aborted is not None:
            raise self.aborted_error()
        self._end(commit=True)

    def rollback(self) -> None:
        object.__setattr__(self, "_aborted", None)
        self._end(commit=False)

    def close(self) -> None:
        """Nothing to close: the connection belongs to the owner. Roll back what is open."""
        self.release()

    def terminate(self) -> None:
        self.release()

    def release(self) -> None:
        """End this checkout: roll back the app transaction it left open."""
        lease = self._lease
        if not lease.in_transaction:
            return
        if not self._async:
            lease.close()
            return
        if in_greenlet():
            await_(lease.aclose())
        # else: garbage collection of a connection the app never returned; no
        # I/O is possible here, and the owner's checkin rolls everything back.

    # -- transaction settings the app may change ---------------------------------------

    def _set_virtual(self, name: str, value: Any) -> None:
        self._virtual[name] = value
        object.__setattr__(self, "_autocommit", self._is_autocommit(self._virtual))

    def __getattr__(self, name: str) -> Any:
        virtual = self._virtual
        if name in virtual:
            if name == "autocommit" and "autocommit" in self._lease.adapter.setters:
                # PyMySQL style: autocommit(value) is a method.
                return lambda value: self._set_virtual("autocommit", bool(value))
            return virtual[name]
        attribute = self._lease.adapter.setters.get(name)
        if attribute is not None:
            return lambda value: self._set_virtual(attribute, value)
        if name == "get_autocommit":
            return lambda: self._autocommit
        return getattr(self._dbapi, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._virtual or name == "autocommit":
            self._set_virtual(name, value)
        else:
            setattr(self._dbapi, name, value)


class SandboxCursor:
    """A real cursor of the owner's connection; every statement takes a turn."""

    __slots__ = ("_conn", "_cursor", "_lease", "_server_side")

    def __init__(self, conn: SandboxConnection, cursor: Any, *, server_side: bool) -> None:
        self._conn = conn
        self._cursor = cursor
        self._lease: Lease = conn._lease
        self._server_side = server_side

    def __repr__(self) -> str:
        return f"<SandboxCursor {self._cursor!r}>"

    def _run(self, method: str, args: tuple[Any, ...]) -> Any:
        lease = self._lease
        conn = self._conn
        if conn._aborted is not None:
            raise conn.aborted_error()
        operation = args[0]
        if type(operation) is str and len(operation) <= 200:
            control = transaction_control(operation)
            if control is not None:
                # A raw BEGIN/COMMIT/ROLLBACK from the app drives its own
                # transaction (a savepoint), never the test's.
                if control == "begin" and not lease.in_transaction:
                    conn._begin()
                elif control in ("commit", "rollback"):
                    conn._end(commit=control == "commit")
                return None
        autocommit = False
        if not lease.in_transaction:
            # The app's transaction starts with its first statement, as in the DBAPI.
            autocommit = conn._autocommit
            conn._begin()
        conn._enter()
        # The same steps as a direct driver's ``with lease.statement(sql):``,
        # with the waits bridged into SQLAlchemy's greenlet.
        turn = lease.statement(operation)
        try:
            if turn.note():
                if conn._async:
                    await_(turn.amark())
                else:
                    turn.mark()
            fn = getattr(self._cursor, method)
            result = fn(*args) if conn._host is None else conn._call(fn, *args)
        except BaseException as exc:
            if conn._async:
                await_(turn.afail(exc))
            else:
                turn.fail(exc)
            if autocommit:
                conn._end(commit=False)
            raise
        turn.done()
        if autocommit:
            conn._end(commit=True)
        return result

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        if parameters is None:
            return self._run("execute", (operation,))
        return self._run("execute", (operation, parameters))

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        return self._run("executemany", (operation, seq_of_parameters))

    def callproc(self, procname: str, parameters: Any = ()) -> Any:
        return self._run("callproc", (procname, parameters))

    def _fetch(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Client-side cursors hold their rows already; server-side ones read
        # from the connection, so they take a turn (and the host loop) too.
        if not self._server_side:
            return fn(*args)
        conn = self._conn
        conn._enter()
        try:
            result = conn._call(fn, *args)
        except BaseException as exc:
            self._lease.exit_with(exc)
            raise
        self._lease.exit()
        return result

    def fetchone(self) -> Any:
        return self._fetch(self._cursor.fetchone)

    def fetchmany(self, *args: Any) -> Any:
        return self._fetch(self._cursor.fetchmany, *args)

    def fetchall(self) -> Any:
        return self._fetch(self._cursor.fetchall)

    def nextset(self) -> Any:
        return self._fetch(self._cursor.nextset)

    def close(self) -> None:
        conn = self._conn
        if self._cursor is None:
            return
        if conn._host is None or not in_greenlet():
            # Outside the greenlet SQLAlchemy's async cursors close without I/O.
            self._cursor.close()
        else:
            conn._call(self._cursor.close)

    def __iter__(self) -> Any:
        if not self._server_side:
            return iter(self._cursor)
        return iter(self.fetchone, None)

    def __enter__(self) -> SandboxCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SandboxCursor.__slots__:
            object.__setattr__(self, name, value)
        elif self._cursor is not None:
            # Without a real cursor, what dialects set before executing (asyncpg's
            # schema cache mark) is dropped: the statement raises the ownership error.
            setattr(self._cursor, name, value)
