"""An owner's connection and the leases drivers take on it.

One :class:`OwnedConnection` per owner wraps one adapter. Every driver-level
use of it (a pool checkout, a Session, a ``pool.acquire()``) is a
:class:`Lease`. Leases of one owner may overlap (a test session left open
while the app serves a request, tasks gathered on one test): each lease's
transaction is a savepoint on a shared stack, and operations take turns on an
:class:`~._lock.OpLock` so two statements never run on the connection at
once.

Stack rules, for leases whose transactions overlap instead of nesting: a
commit of a lease that is not on top is remembered and released together with
the savepoints above it when they finish; a rollback rolls back everything
done since the lease began, including what later leases did.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import OwnershipError
from ._ddl import implicit_commit
from ._lock import OpLock, current_holder
from ._messages import DOCS_PAGE, caller_name
from ._reset import session_effects

if TYPE_CHECKING:
    from ._adapter import AsyncAdapter, SyncAdapter
    from ._host import HostLoop
    from ._owner import OwnerState

__all__ = ["Lease", "OwnedConnection"]

log = logging.getLogger("sqlsandbox.ownership")

State = Literal["open", "lost", "doomed", "closed"]
#: Holder used by checkin, distinct from every task and thread.
_CHECKIN = object()
_names = itertools.count(1)


class _Savepoint:
    __slots__ = ("alive", "committed", "name")

    def __init__(self, name: str | None) -> None:
        # None stands for the real transaction of a ``sandbox=False`` owner.
        self.name = name
        self.committed = False
        self.alive = True


Action = tuple[Any, ...]


class OwnedConnection:
    """The one connection of one owner, with its savepoint stack and turn lock."""

    def __init__(
        self,
        adapter: SyncAdapter | AsyncAdapter,
        owner: OwnerState,
        *,
        is_async: bool,
        host: HostLoop | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.adapter: Any = adapter
        self.kind: str = adapter.kind
        self.dialect: str = adapter.dialect
        self.owner: OwnerState | None = owner
        self.is_async = is_async
        self.host = host
        #: The loop the connection must be used on (bound or hosted), else None.
        self.loop = loop
        self.sandboxed = owner.sandboxed
        self.queue_timeout = owner.sandbox.queue_timeout
        self.lock = OpLock()
        self.stack: list[_Savepoint] = []
        self.state: State = "open"
        self.reason: str | None = None
        self.guard_ddl = self.sandboxed and self.dialect == "mysql"
        # What the statements seen by check_statement (MariaDB/MySQL) may have left.
        self.moved_counters = False
        self.kept_session = False

    def __repr__(self) -> str:
        return f"<OwnedConnection {self.kind} {self.state}>"

    # -- errors ----------------------------------------------------------------

    def unusable_error(self) -> OwnershipError:
        """Say why this connection cannot be used any more."""
        owner = self.owner
        who = repr(owner.name) if owner else "its owner"
        if owner is not None and owner.status == "expired":
            return owner.expired_error()
        if self.state == "lost":
            return OwnershipError(
                f"The database connection of owner {who} was lost: {self.reason}. "
                "Its transaction, and all data the test wrote in it, are gone, so "
                f"{caller_name()} cannot continue on it. Checking in discards it and the "
                "next checkout (the next test) gets a fresh, healthy connection. "
                f"See {DOCS_PAGE}#lost-connections"
            )
        return OwnershipError(
            f"Owner {who} checked in (its test ended) while {caller_name()} was still "
            "using its connection; the connection was discarded and its transaction "
            "rolled back. Await or cancel background tasks and threads before the "
            f"test ends. See {DOCS_PAGE}#owner-ended"
        )

    def _queue_error(self) -> OwnershipError:
        holder = self.lock.holder
        if isinstance(holder, asyncio.Task):
            by = f"task {holder.get_name()!r}"
        elif holder is _CHECKIN:
            by = "the checkin"
        else:
            by = f"thread id {holder}"
        who = repr(self.owner.name) if self.owner else "its owner"
        return OwnershipError(
            f"{caller_name()} waited more than queue_timeout={self.queue_timeout}s for "
            f"its turn on the connection of owner {who}, which {by} is using. Concurrent "
            "users of one owner take turns, one statement or transaction at a time; one "
            "of them is stuck or holds the connection too long (an open transaction "
            "waiting on another one?). Raise the queue timeout (Sandbox(queue_timeout=...), "
            "the `queue_timeout` setting), give each concurrent worker its own checkout, "
            f'or use @pytest.mark.sandbox(isolation="database"). See {DOCS_PAGE}#queue-timeout'
        )

    def ddl_error(self, verb: str) -> OwnershipError:
        return OwnershipError(
            f"{verb!r} commits implicitly on MariaDB/MySQL, which would end the test's "
            "transaction and keep everything written so far. Statements that change the "
            "schema cannot run inside a sandboxed transaction there. Give this test a "
            'database of its own with @pytest.mark.sandbox(isolation="database"), or move '
            f"the DDL into the migrations. See {DOCS_PAGE}#mariadb-ddl"
        )

    # -- the turn lock -----------------------------------------------------------

    def _usable(self) -> bool:
        owner = self.owner
        return self.state == "open" and owner is not None and owner.status == "active"

    def enter(self) -> None:
        """Take this caller's turn (blocking); raise if the connection is unusable."""
        holder = current_holder()
        if not self.lock.try_acquire(holder) and not self.lock.acquire(holder, self.queue_timeout):
            raise self._queue_error()
        if not self._usable():
            self._leave_unusable()

    def enter_nowait(self) -> bool:
        """Take the turn if nobody has it; return False if the caller must wait."""
        if not self.lock.try_acquire(current_holder()):
            return False
        if not self._usable():
            self._leave_unusable()
        return True

    async def aenter(self) -> None:
        """Take this task's turn (suspending); raise if the connection is unusable."""
        holder = current_holder()
        if not self.lock.try_acquire(holder) and not await self.lock.aacquire(
            holder, self.queue_timeout
        ):
            raise self._queue_error()
        if not self._usable():
            self._leave_unusable()

    def exit(self, *, check: bool = False) -> None:
        """End the turn; with *check*, verify the app did not end the test's transaction."""
        if self.state == "open":
            if not (check and self.sandboxed and self.adapter.in_transaction() is False):
                self.lock.release()
                return
            self._lose(
                "a statement the app sent ended the test's transaction (a raw COMMIT, "
                "ROLLBACK or BEGIN, or DDL that MariaDB/MySQL commits implicitly), so "
                "everything after it would have been committed for real"
            )
        self._leave_unusable()

    def exit_with(self, exc: BaseException) -> None:
        """End the turn after *exc*: raise OwnershipError if it broke the connection."""
        if self.state == "open":
            try:
                broken = self.adapter.is_broken()
            except Exception:
                broken = True
            if not broken:
                self.lock.release()
                return
            self._lose(f"{type(exc).__name__}: {exc}".strip())
        try:
            self._leave_unusable()
        except OwnershipError as err:
            raise err from exc

    def _leave_unusable(self) -> None:
        """Release the turn on an unusable connection and raise why."""
        err = self.unusable_error()
        if self.state == "doomed":
            # The owner checked in while we ran: we are the last user, so we close it.
            self.state = "closed"
            self.discard_adapter()
        self.lock.release()
        raise err

    # -- losing the connection ---------------------------------------------------

    def _lose(self, reason: str) -> None:
        self.state = "lost"
        self.reason = reason
        owner = self.owner
        if owner is not None:
            # Nobody restores what this connection moved, and it may have committed.
            owner.sandbox._sequences_moved()
        for entry in self.stack:
            entry.alive = False
        self.stack.clear()
        self.discard_adapter()
        log.warning("sqlsandbox: connection of owner %s lost: %s", self.owner, reason)

    def discard_adapter(self) -> None:
        """Close the adapter without I/O, on the thread or loop it belongs to."""
        adapter = self.adapter
        if not self.is_async:
            _quietly(adapter.interrupt)
            _quietly(adapter.close)
            return
        loop = self.loop
        if loop is None or loop.is_closed():
            _quietly(adapter.discard)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _quietly(adapter.discard)
        else:
            try:
                loop.call_soon_threadsafe(_quietly, adapter.discard)
            except RuntimeError:  # closed in the meantime
                _quietly(adapter.discard)

    def interrupt(self) -> None:
        """Abort whatever another user runs on the connection right now."""
        adapter = self.adapter
        if not self.is_async or self.loop is None:
            _quietly(adapter.interrupt)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop or self.loop.is_closed():
            _quietly(adapter.interrupt)
        else:
            try:
                self.loop.call_soon_threadsafe(_quietly, adapter.interrupt)
            except RuntimeError:
                _quietly(adapter.interrupt)

    # -- savepoint stack (caller holds the turn) ----------------------------------

    def plan_begin(self) -> tuple[Action, _Savepoint]:
        if not self.sandboxed and not self.stack:
            entry = _Savepoint(None)
            action: Action = ("begin", None)
        else:
            entry = _Savepoint(f"sqlsandbox_{next(_names)}")
            action = ("savepoint", entry.name)
        self.stack.append(entry)
        return action, entry

    def _pop_committed(self) -> _Savepoint | None:
        """Remove the run of committed entries on top; return the lowest of them."""
        stack = self.stack
        i = len(stack)
        while i > 0 and stack[i - 1].committed:
            i -= 1
        if i == len(stack):
            return None
        lowest = stack[i]
        for entry in stack[i:]:
            entry.alive = False
        del stack[i:]
        return lowest

    def plan_commit(self, entry: _Savepoint) -> list[Action]:
        if not entry.alive:
            return []
        entry.committed = True
        if self.stack[-1] is not entry:
            return []  # released later, together with the leases above it
        lowest = self._pop_committed()
        assert lowest is not None
        return [("commit",)] if lowest.name is None else [("release", lowest.name)]

    def plan_rollback(self, entry: _Savepoint) -> list[Action]:
        if not entry.alive:
            return []
        index = self.stack.index(entry)
        for dropped in self.stack[index:]:
            dropped.alive = False
        del self.stack[index:]
        if entry.name is None:
            return [("rollback",)]
        lowest = self._pop_committed()
        actions: list[Action] = [("rollback_to", entry.name, entry.name)]
        if lowest is not None:
            actions.append(("commit",) if lowest.name is None else ("release", lowest.name))
        return actions

    def run(self, actions: list[Action]) -> None:
        adapter = self.adapter
        for name, *args in actions:
            getattr(adapter, name)(*args)

    async def arun(self, actions: list[Action]) -> None:
        adapter = self.adapter
        if self.host is not None and not self.host.in_host():
            await self.host.run(_run_async(adapter, actions))
        else:
            await _run_async(adapter, actions)

    def forget_stack(self) -> None:
        for entry in self.stack:
            entry.alive = False
        self.stack.clear()


async def _run_async(adapter: Any, actions: list[Action]) -> None:
    for name, *args in actions:
        await getattr(adapter, name)(*args)


def _quietly(fn: Any) -> None:
    try:
        fn()
    except Exception:  # closing a broken connection may fail in any driver-specific way
        log.debug("sqlsandbox: ignoring error while discarding a connection", exc_info=True)


class Lease:
    """One driver-level use of an owner's connection, from checkout to return.

    Drivers bracket every driver call with :meth:`enter` / :meth:`exit`
    (or :meth:`aenter` for asyncio) and map the app's BEGIN / COMMIT /
    ROLLBACK to :meth:`begin` / :meth:`commit` / :meth:`rollback` (or the
    ``a``-prefixed twins), which become SAVEPOINT / RELEASE / ROLLBACK TO
    inside the sandbox. :meth:`close` rolls back what the lease left open.
    """

    __slots__ = ("_c", "_sp")

    def __init__(self, conn: OwnedConnection) -> None:
        self._c = conn
        self._sp: _Savepoint | None = None

    def __repr__(self) -> str:
        return f"<Lease on {self._c!r} in_transaction={self.in_transaction}>"

    # -- what the driver needs to know ---------------------------------------------

    @property
    def raw(self) -> Any:
        """The driver connection of the owner (``adapter.raw``)."""
        return self._c.adapter.raw

    @property
    def adapter(self) -> Any:
        """The adapter the owner's connection was opened with."""
        return self._c.adapter

    @property
    def kind(self) -> str:
        return self._c.kind

    @property
    def dialect(self) -> str:
        return self._c.dialect

    @property
    def sandboxed(self) -> bool:
        """False for ``checkout(sandbox=False)``: transactions are real and commit."""
        return self._c.sandboxed

    @property
    def host(self) -> HostLoop | None:
        """The host loop every driver call must run on, or None to run in place."""
        return self._c.host

    @property
    def owner_name(self) -> str:
        owner = self._c.owner
        return owner.name if owner is not None else "?"

    @property
    def in_transaction(self) -> bool:
        """Whether this lease has an app transaction (a savepoint) open."""
        sp = self._sp
        return sp is not None and sp.alive

    @property
    def guard_ddl(self) -> bool:
        """Whether statements must pass :meth:`check_statement` (MariaDB/MySQL)."""
        return self._c.guard_ddl

    def check_statement(self, sql: str) -> None:
        """Refuse a statement MariaDB/MySQL would commit implicitly.

        Also notes what the statement may leave behind a rollback (moved
        AUTO_INCREMENT counters, session state), for the checkin.
        """
        c = self._c
        if c.guard_ddl and isinstance(sql, str):
            verb = implicit_commit(sql)
            if verb is not None:
                raise c.ddl_error(verb)
            moved, kept = session_effects(sql)
            c.moved_counters = c.moved_counters or moved
            c.kept_session = c.kept_session or kept

    @property
    def usable(self) -> bool:
        """False once the owner ended or its connection was lost (then every turn raises)."""
        return self._c._usable()

    # -- turns -----------------------------------------------------------------------

    def enter(self) -> None:
        """Wait for this caller's turn on the connection (blocking)."""
        self._c.enter()

    def enter_nowait(self) -> bool:
        """Take the turn if it is free; False means: ``await lease.aenter()``."""
        return self._c.enter_nowait()

    async def aenter(self) -> None:
        """Wait for this task's turn on the connection."""
        await self._c.aenter()

    def exit(self, *, check: bool = False) -> None:
        """End the turn after a successful call; *check* that the test's transaction is intact."""
        self._c.exit(check=check)

    def exit_with(self, exc: BaseException) -> None:
        """End the turn after the driver call raised *exc*.

        Raises OwnershipError (chained to *exc*) when the connection is gone
        or was lost because of it; otherwise returns, and the caller re-raises
        *exc*.
        """
        self._c.exit_with(exc)

    # -- app transactions, blocking ----------------------------------------------------

    def begin(self) -> None:
        """Start the app's transaction: a SAVEPOINT (a real BEGIN when not sandboxed)."""
        c = self._c
        c.enter()
        try:
            if not self.in_transaction:
                action, self._sp = c.plan_begin()
                c.run([action])
        except BaseException as exc:
            c.exit_with(exc)
            raise
        c.exit()

    def commit(self) -> None:
        """Commit the app's transaction: RELEASE SAVEPOINT."""
        self._end(commit=True)

    def rollback(self) -> None:
        """Roll back the app's transaction: ROLLBACK TO SAVEPOINT."""
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        sp = self._sp
        if sp is None:
            return
        self._sp = None
        c = self._c
        if not sp.alive or (not commit and not c._usable()):
            return  # a rollback on a connection that is gone has nothing left to undo
        c.enter()
        try:
            c.run(c.plan_commit(sp) if commit else c.plan_rollback(sp))
        except BaseException as exc:
            c.exit_with(exc)
            raise
        c.exit()

    def close(self) -> None:
        """Give the lease back: roll back its open transaction, quietly if the owner is gone."""
        if self.in_transaction:
            try:
                self.rollback()
            except OwnershipError:
                pass
        self._sp = None

    # -- app transactions, asyncio ----------------------------------------------------

    async def abegin(self) -> None:
        c = self._c
        if not c.enter_nowait():
            await c.aenter()
        try:
            if not self.in_transaction:
                action, self._sp = c.plan_begin()
                await c.arun([action])
        except BaseException as exc:
            c.exit_with(exc)
            raise
        c.exit()

    async def acommit(self) -> None:
        await self._aend(commit=True)

    async def arollback(self) -> None:
        await self._aend(commit=False)

    async def _aend(self, *, commit: bool) -> None:
        sp = self._sp
        if sp is None:
            return
        self._sp = None
        c = self._c
        if not sp.alive or (not commit and not c._usable()):
            return  # a rollback on a connection that is gone has nothing left to undo
        if not c.enter_nowait():
            await c.aenter()
        try:
            await c.arun(c.plan_commit(sp) if commit else c.plan_rollback(sp))
        except BaseException as exc:
            c.exit_with(exc)
            raise
        c.exit()

    async def aclose(self) -> None:
        if self.in_transaction:
            try:
                await self.arollback()
            except OwnershipError:
                pass
        self._sp = None
