"""An owner's connection and the leases drivers take on it.

One :class:`OwnedConnection` per owner wraps one adapter. Every driver-level
use of it (a pool checkout, a Session, a ``pool.acquire()``) is a
:class:`Lease`. Leases of one owner may overlap (a test session left open
while the app serves a request, tasks gathered on one test): each lease's
transaction is a savepoint on a shared stack, and operations take turns on an
:class:`~._lock.OpLock` so two statements never run on the connection at
once.

Leases of one owner keep each other's commits where a stack of savepoints
allows (``_stack.py``): a lease that only read rolls back like a commit, so
drivers show the lease each statement, all in the same way
(:meth:`Lease.statement`, a :class:`Turn`): a statement that lands in another
lease's savepoint gets a savepoint of its own, and its failure rolls back only
to that. See docs/ownership.md#concurrent-sessions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import OwnershipError
from ._ddl import UNDO, WRITE, implicit_commit, statement_kind
from ._lock import OpLock, current_holder
from ._messages import DOCS_PAGE, caller_name
from ._reset import session_effects
from ._stack import Action, Savepoint, Stack, savepoint_name

if TYPE_CHECKING:
    from ._adapter import AsyncAdapter, SyncAdapter
    from ._host import HostLoop
    from ._owner import OwnerState

__all__ = ["CHECKIN", "GUARD", "MARK", "Lease", "OwnedConnection", "Turn"]

log = logging.getLogger("sqlsandbox.ownership")

State = Literal["open", "lost", "doomed", "closed"]
#: Holder used by checkin, distinct from every task and thread.
CHECKIN = object()


#: MariaDB/MySQL errors after which InnoDB has rolled back the whole transaction
#: (a lock wait timeout only with innodb_rollback_on_timeout).
ER_LOCK_WAIT_TIMEOUT = 1205
ER_LOCK_DEADLOCK = 1213


#: Flags of :meth:`Lease.prepare_statement`: open a new segment on the top
#: entry before the statement (:meth:`Lease.mark`); on failure undo the
#: statement at once (:meth:`Lease.recover`).
MARK = 1
GUARD = 2


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
        self.stack = Stack(owner.name)
        self.state: State = "open"
        self.reason: str | None = None
        #: Why the server rolled back the test's transaction, when that lost it.
        self.rolled_back: str | None = None
        self.guard_ddl = self.sandboxed and self.dialect == "mysql"
        # What the statements seen by check_statement (MariaDB/MySQL) may have left.
        self.moved_counters = False
        self.kept_session = False
        #: A failed statement aborts the whole transaction until a ROLLBACK TO.
        self.aborts = self.dialect == "postgresql"
        # The statement of the current turn: who ran it, the kind still to
        # record (prepare_statement records it when the statement is done),
        # and whether recover() already undid it.
        self.noted: Lease | None = None
        self.pending = 0
        self.recovered = False

    def __repr__(self) -> str:
        return f"<OwnedConnection {self.kind} {self.state}>"

    # -- errors ----------------------------------------------------------------

    def unusable_error(self) -> OwnershipError:
        """Say why this connection cannot be used any more."""
        owner = self.owner
        who = repr(owner.name) if owner else "its owner"
        if owner is not None and owner.status == "expired":
            return owner.expired_error()
        if self.state == "lost" and self.rolled_back is not None:
            why = self.rolled_back
            fix = (
                "Another connection (another owner, a thread or process outside the "
                "sandbox) locked the same rows: give every test data of its own (unique "
                "names and keys, not fixed ids) so that tests never lock the same rows, or "
                if why != "an error"
                else "Fix what failed, or "
            )
            return OwnershipError(
                f"The server rolled back the whole transaction of owner {who}, and "
                f"everything the test wrote in it, because of {why} ({self.reason}). "
                f"{caller_name()} cannot continue on it: its statements would commit for "
                "real. The checkin discards the connection and the next test gets a fresh "
                f"one. {fix}give this test a database of its own with "
                f'@pytest.mark.sandbox(isolation="database"). See {DOCS_PAGE}#deadlocks'
            )
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
        elif holder is CHECKIN:
            by = "the checkin"
        else:
            by = f"thread id {holder}"
        who = repr(self.owner.name) if self.owner else "its owner"
        return OwnershipError(
            f"{caller_name()} waited more than queue_timeout={self.queue_timeout}s for "
            f"its turn on the connection of owner {who}, which {by} is using. Concurrent "
            "users of one owner take turns, one statement or transaction at a time; one "
            "of them is stuck or holds the connection too long (an open transaction "
            "waiting on another one?). Raise the queue timeout (Sandbox(queue_timeout=...)), "
            "give each concurrent worker its own checkout, "
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
        """End the turn after *exc*: raise OwnershipError if it broke the connection.

        Also when the server rolled back the test's transaction because of
        *exc* (a deadlock on MariaDB/MySQL): the app's next statements would
        run outside it and commit for real.
        """
        if self.state == "open":
            try:
                broken = self.adapter.is_broken()
                cause = None if broken or not self.sandboxed else self._rolled_back_by(exc)
            except Exception:
                broken, cause = True, None
            if not broken and cause is None:
                self.lock.release()
                return
            self.rolled_back = cause
            self._lose(f"{type(exc).__name__}: {exc}".strip())
        try:
            self._leave_unusable()
        except OwnershipError as err:
            raise err from exc

    def _rolled_back_by(self, exc: BaseException) -> str | None:
        """Say why the server ended the test's transaction after *exc*, or None if it is open."""
        if self.dialect == "mysql":
            # The status the driver keeps is the one before the error: know it by the code.
            code = exc.args[0] if exc.args else None
            if code == ER_LOCK_DEADLOCK:
                return "a deadlock"
            if code == ER_LOCK_WAIT_TIMEOUT and getattr(self.adapter, "rollback_on_timeout", False):
                return "a lock wait timeout (innodb_rollback_on_timeout is on)"
            return None
        if self.adapter.in_transaction() is False:
            return "an error"
        return None

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
        self.stack.forget()
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
        self.stack.forget()
        self.noted = None
        self.pending = 0
        self.recovered = False


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

    __slots__ = ("_c", "_parent", "_root", "_sp")

    def __init__(self, conn: OwnedConnection) -> None:
        self._c = conn
        self._sp: Savepoint | None = None
        self._parent: Lease | None = None
        self._root: Lease = self

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
    def lost_transaction(self) -> bool:
        """Whether an app transaction was open here when the owner's checkin rolled it back."""
        sp = self._sp
        return sp is not None and not sp.alive and not self._c._usable()

    @property
    def guard_ddl(self) -> bool:
        """Whether statements must pass :meth:`check_statement` (MariaDB/MySQL)."""
        return self._c.guard_ddl

    def nest_in(self, outer: Lease) -> None:
        """Make this lease's transactions part of *outer*'s (a driver's nested transaction block).

        What this lease writes, *outer* wrote too: rolling *outer* back undoes it
        even after this lease committed.
        """
        self._parent = outer
        self._root = outer._root

    def note_statement(self, sql: object) -> None:
        """Tell the lease about the statement it runs next, in the caller's turn.

        Drivers call it (or :meth:`prepare_statement`) before each statement;
        a statement a driver never notes counts as a write of every open
        transaction. Refuses what MariaDB/MySQL would commit implicitly
        (:meth:`check_statement`), and records a write at once, so it may run
        before or after the driver opens a savepoint for the statement.
        """
        c = self._c
        c.noted = self
        c.pending = 0
        if c.guard_ddl:
            self.check_statement(sql)  # type: ignore[arg-type]
        kind = statement_kind(sql)
        if kind:
            c.stack.wrote(self._chain(), self._root, kind)
        else:
            self._used()

    def prepare_statement(self, sql: object) -> int:
        """Like :meth:`note_statement`, for drivers that keep overlapping sessions apart.

        Returns flags: with ``MARK`` call :meth:`mark` before the statement;
        with ``GUARD`` call :meth:`recover` if it fails, then :meth:`exit_with`.
        A write is recorded when the turn ends (:meth:`exit` or
        :meth:`exit_with`), in the segment the statement ran in.
        """
        c = self._c
        c.noted = self
        c.pending = 0
        if c.guard_ddl:
            self.check_statement(sql)  # type: ignore[arg-type]
        kind = statement_kind(sql)
        c.pending = kind
        sp = self._sp
        stack = c.stack
        if sp is None or not stack or kind == UNDO:
            return 0
        self._used()
        top = stack[-1]
        cur = len(top.marks) - 1
        isolate = kind or c.aborts  # can a failure leave something behind?
        if top is sp:
            # Its own work in a segment that holds others' work: start a new one.
            return MARK if isolate and top.foreign_last == cur else 0
        if not isolate:
            return 0
        # Another lease's savepoint is on top: the statement lands in its
        # segment, and a failure must be undone without undoing that lease's work.
        if top.own_last == cur or top.foreign_last == cur or top.marks[cur] is None:
            return MARK | GUARD
        return GUARD

    def _chain(self) -> list[Savepoint]:
        """Its open transaction and those of the leases it is nested in, innermost first."""
        chain = []
        x: Lease | None = self
        while x is not None:
            sp = x._sp
            if sp is not None and sp.alive:
                chain.append(sp)
            x = x._parent
        return chain

    def _used(self) -> None:
        x: Lease | None = self
        while x is not None:
            sp = x._sp
            if sp is not None:
                sp.used = True
            x = x._parent

    def mark(self) -> None:
        """Open a new segment on the top transaction (blocking), after ``MARK``."""
        c = self._c
        name = savepoint_name()
        c.run([("savepoint", name)])
        c.stack[-1].marks.append(name)

    async def amark(self) -> None:
        c = self._c
        name = savepoint_name()
        await c.arun([("savepoint", name)])
        c.stack[-1].marks.append(name)

    def recover(self) -> None:
        """Undo the statement that just failed (blocking), after ``GUARD``."""
        c = self._c
        c.run([("rollback_to", c.stack[-1].marks[-1], None)])
        c.recovered = True

    async def arecover(self) -> None:
        c = self._c
        await c.arun([("rollback_to", c.stack[-1].marks[-1], None)])
        c.recovered = True

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

    def turn(self, *, check: bool = False) -> Turn:
        """Bracket a driver call with a turn: ``with lease.turn():`` or ``async with``.

        For calls that send no statement of the app's (a fetch from a server-side
        cursor, a ping). ``check=True``: what ran is an unnoted statement (a
        pipeline, a COPY), checked and recorded as by :meth:`exit`.
        """
        return Turn(self, None, _UNNOTED, check)

    def statement(self, sql: object, *, noted_by: Lease | None = None) -> Turn:
        """Bracket one statement of the app's: its turn, :meth:`note_statement`, the checks.

        *noted_by* is the lease the statement belongs to when it is not this
        one (the innermost of a driver's nested transaction blocks).
        """
        return Turn(self, sql, noted_by or self, True)

    def exit(self, *, check: bool = False) -> None:
        """End the turn after a successful call; *check* that the test's transaction is intact.

        ``check=True`` means a statement ran: it is recorded as noted, or as an
        unknown write if no :meth:`note_statement` came before it.
        """
        c = self._c
        if check:
            noted = c.noted
            if noted is None:
                c.stack.wrote_unknown(self._chain())
            else:
                c.noted = None
                kind = c.pending
                if kind:
                    c.pending = 0
                    c.stack.wrote(noted._chain(), noted._root, kind)
        c.exit(check=check)

    def exit_with(self, exc: BaseException) -> None:
        """End the turn after the driver call raised *exc*.

        Raises OwnershipError (chained to *exc*) when the connection is gone
        or was lost because of it; otherwise returns, and the caller re-raises
        *exc*.
        """
        c = self._c
        noted = c.noted
        if noted is None:
            c.stack.wrote_unknown(self._chain())
        else:
            c.noted = None
            kind = c.pending
            c.pending = 0
            if c.recovered:
                c.recovered = False
            elif kind or c.aborts:
                # It may have written part of its work, or (PostgreSQL) left the
                # transaction failed: rolling the lease back must be a real rollback.
                c.stack.wrote(noted._chain(), noted._root, kind or WRITE)
        c.exit_with(exc)

    # -- app transactions, blocking ----------------------------------------------------

    def begin(self) -> None:
        """Start the app's transaction: a SAVEPOINT (a real BEGIN when not sandboxed)."""
        c = self._c
        c.enter()
        try:
            if not self.in_transaction:
                action, self._sp = c.stack.begin(self._root, real=not c.sandboxed)
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
            c.run(c.stack.commit(sp) if commit else c.stack.rollback(sp))
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
                action, self._sp = c.stack.begin(self._root, real=not c.sandboxed)
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
            await c.arun(c.stack.commit(sp) if commit else c.stack.rollback(sp))
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


#: ``Turn`` notes nothing: the call sends no statement, or one the driver cannot show.
_UNNOTED: Any = None


class Turn:
    """A turn on the owner's connection around one driver call, as a context manager.

    Waits for the turn (blocking with ``with``, suspending with ``async with``),
    shows the statement to the lease if there is one, and ends the turn:
    :meth:`Lease.exit` when the block succeeded, :meth:`Lease.exit_with` when it
    raised (which may replace the error with an OwnershipError chained to it).

    A statement is shown with :meth:`Lease.prepare_statement`, so leases of one
    owner that overlap keep each other's work: when the statement may land in
    another lease's savepoint, a savepoint of its own comes first (:meth:`mark`)
    and a failure rolls back to it (:meth:`fail`) before the turn ends. Drivers
    that take the turn themselves (the SQLAlchemy proxy, in a greenlet) call
    :meth:`note`, :meth:`mark` / :meth:`amark`, :meth:`fail` / :meth:`afail` and
    :meth:`done` in that order instead of using the context manager.
    """

    __slots__ = ("_check", "_flags", "_guard", "_lease", "_noted_by", "_sql")

    def __init__(self, lease: Lease, sql: object, noted_by: Lease | None, check: bool) -> None:
        self._lease = lease
        self._sql = sql
        self._noted_by = noted_by
        self._check = check
        self._flags = 0
        #: Whether a failure rolls back to the savepoint before the statement.
        self._guard = False

    # -- the steps, for callers that take the turn themselves ---------------------------

    def note(self) -> bool:
        """Show the statement to its lease, in the caller's turn.

        Returns True when a savepoint must come before it: call :meth:`mark`
        (or ``await`` :meth:`amark`). Raises what the lease refuses (MariaDB DDL).
        """
        noted_by = self._noted_by
        if noted_by is None:
            return False
        flags = self._flags = noted_by.prepare_statement(self._sql)
        if flags & MARK:
            return True  # guarded once mark() made the savepoint to go back to
        self._guard = bool(flags & GUARD)
        return False

    def mark(self) -> None:
        """Open the savepoint :meth:`note` asked for (blocking)."""
        self._lease.mark()
        self._guard = bool(self._flags & GUARD)

    async def amark(self) -> None:
        await self._lease.amark()
        self._guard = bool(self._flags & GUARD)

    def fail(self, exc: BaseException) -> None:
        """End the turn after *exc*: undo the statement if it was guarded (blocking)."""
        try:
            if self._guard:
                self._lease.recover()
        finally:
            self._lease.exit_with(exc)

    async def afail(self, exc: BaseException) -> None:
        try:
            if self._guard:
                await self._lease.arecover()
        finally:
            self._lease.exit_with(exc)

    def done(self) -> None:
        """End the turn after the call succeeded."""
        self._lease.exit(check=self._check)

    # -- the context manager ---------------------------------------------------------------

    def __enter__(self) -> None:
        self._lease._c.enter()
        try:
            if self.note():
                self.mark()
        except BaseException as exc:
            self.fail(exc)
            raise

    async def __aenter__(self) -> None:
        c = self._lease._c
        if not c.enter_nowait():
            await c.aenter()
        try:
            if self.note():
                await self.amark()
        except BaseException as exc:
            await self.afail(exc)
            raise

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.done()
        else:
            self.fail(exc)

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.done()
        else:
            await self.afail(exc)
