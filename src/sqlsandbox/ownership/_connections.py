"""Opening, keeping and releasing owner connections (part of the Sandbox).

Connections live in an idle pool per kind (and per event loop for loop-bound
asyncio drivers) between owners. Opening sends BEGIN at once; releasing rolls
back on the thread or loop the connection belongs to, or discards it when that
is impossible (its loop closed) or when someone is still using it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, OwnershipError, ProvisioningError, SandboxError
from ._connection import CHECKIN, OwnedConnection
from ._host import HostLoop, host_loop
from ._lock import current_holder
from ._messages import DOCS_PAGE

if TYPE_CHECKING:
    from .._urls import DatabaseURL
    from ._adapter import AsyncAdapter, AsyncConnector, Connector, SyncAdapter
    from ._owner import OwnerState

__all__ = ["ConnectionsMixin", "deferred_error", "running_loop"]

#: Seconds a rollback on another thread's event loop may take before the
#: connection is dropped instead (the server then rolls back on its own).
_RELEASE_TIMEOUT = 30.0


def running_loop() -> asyncio.AbstractEventLoop | None:
    """Return the event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ConnectionsMixin:
    """The connection half of :class:`~._sandbox.Sandbox`."""

    name: str
    url: DatabaseURL | None
    queue_timeout: float | None
    check_deferred_on_checkin: bool
    max_idle: int
    reset_sequences: bool
    _reset_session: bool
    _lock: threading.RLock
    _closed: bool
    _idle: dict[tuple[str, asyncio.AbstractEventLoop | None], list[Any]]
    #: Counts events after which sequence baselines may be stale: plain
    #: connections handed out, real commits, lost connections.
    _epoch: int
    #: Owner connections opened, pruned of those no longer open as it goes.
    _open_conns: set[OwnedConnection]
    #: A checkin skipped its restore because another owner was mid-test.
    _restore_debt: bool

    # ------------------------------------------------------------------------------
    # What a rollback does not undo (see _reset.py)
    # ------------------------------------------------------------------------------

    def _init_resets(self, reset_sequences: bool) -> None:
        self.reset_sequences = reset_sequences
        # Undo session state a rollback leaves (private: tests switch it off).
        self._reset_session = True
        self._epoch = 0
        self._restore_debt = False
        self._open_conns = set()

    def _sequences_moved(self) -> None:
        """Note that sequences may have moved outside any restore: baselines are stale."""
        self._epoch += 1  # a lost update under a race still changes the value

    def _track(self, conn: OwnedConnection) -> None:
        with self._lock:
            # A new set, not an update: _alone() iterates without the lock.
            conns = {conn}
            for c in self._open_conns:
                if c.state == "open":
                    conns.add(c)
            self._open_conns = conns

    def _alone(self, conn: OwnedConnection | None = None) -> bool:
        """Return whether no owner connection but *conn* is open (none mid-test)."""
        for c in self._open_conns:
            if c is not conn and c.state == "open":
                return False
        return True

    def _trusted(self, adapter: Any) -> bool:
        """Whether *adapter* holds a baseline taken since the last possible commit."""
        return adapter.snapshot_epoch is not None and adapter.snapshot_epoch == self._epoch

    def _begin_options(self, state: OwnerState, adapter: Any) -> dict[str, bool]:
        """Decide whether this BEGIN first records the baseline, or first restores."""
        if not getattr(adapter, "resets", False):
            return {}
        if not (state.sandboxed and self.reset_sequences):
            return {}
        alone = self._alone()
        epoch = adapter.snapshot_epoch
        if epoch is not None and epoch == self._epoch:  # trusted
            # Pay what concurrent owners left unrestored before this test inserts.
            return {"restore": self._restore_debt and alone}
        # A baseline taken while another owner is mid-test would include what
        # that owner consumed: take none, and restore nothing with this one.
        adapter.snapshot_epoch = None
        return {"snapshot": alone}

    def _begun(self, adapter: Any, options: dict[str, bool], epoch: int) -> None:
        if options.get("snapshot"):
            adapter.snapshot_epoch = epoch
            # Nobody could restore the debt, so this baseline is the new normal.
            self._restore_debt = False
        if options.get("restore"):
            self._restore_debt = False

    def _checkin_options(self, conn: OwnedConnection) -> dict[str, bool]:
        """Decide what the checkin undoes besides the transaction."""
        adapter = conn.adapter
        if not getattr(adapter, "resets", False):
            return {}
        epoch = adapter.snapshot_epoch
        sequences = (
            self.reset_sequences
            and epoch is not None
            and epoch == self._epoch  # trusted
            and (self._restore_debt or conn.dialect != "mysql" or conn.moved_counters)
        )
        if sequences and not self._alone(conn):
            # Restoring while another owner is mid-test would hand out its ids
            # twice: the next owner alone on a trusted connection restores.
            self._restore_debt = True
            sequences = False
        elif sequences:
            self._restore_debt = False
        return {"sequences": sequences, "session": self._reset_session}

    def _keep_after(self, conn: OwnedConnection) -> bool:
        """Whether the connection may serve the next owner as it is."""
        if not conn.sandboxed:
            # It committed for real and kept every session setting of the test.
            self._sequences_moved()
            return False
        return not (self._reset_session and conn.kept_session)

    def _two_drivers(self, state: OwnerState, have: str, want: str) -> OwnershipError:
        return OwnershipError(
            f"Owner {state.name!r} already uses its connection through {have}; {want} "
            "cannot join that transaction, because each driver needs a connection of its "
            "own and one test transaction cannot span two connections. Use one driver (one "
            "engine kind: all sync or all async, one DBAPI) per test, or give the test a "
            'database of its own with @pytest.mark.sandbox(isolation="database"). '
            f"See {DOCS_PAGE}#two-drivers"
        )

    # ------------------------------------------------------------------------------
    # Opening connections
    # ------------------------------------------------------------------------------

    def _connect_error(self, state: OwnerState, kind: str, exc: BaseException) -> SandboxError:
        where = self.url.masked() if self.url is not None else self.name
        return ProvisioningError(
            f"Cannot open a {kind} connection to {where} for owner {state.name!r}: "
            f"{type(exc).__name__}: {exc}. Check that the server runs and accepts "
            "connections (SQLSANDBOX_URL / --sqlsandbox-url)."
        )

    def _open_sync(
        self, state: OwnerState, connector: Connector, *, register: bool = False
    ) -> OwnedConnection:
        if connector.is_async:
            raise ConfigError(f"{connector.kind} is an asyncio driver: use acheckout() / alease().")
        # An owner being checked out is not registered yet: nobody else can open for it.
        if register and not state.open_lock.acquire(current_holder(), self.queue_timeout):
            raise OwnershipError(f"Timed out waiting to open owner {state.name!r}'s connection.")
        try:
            if state.conn is not None:
                if state.conn.kind != connector.kind:
                    raise self._two_drivers(state, state.conn.kind, connector.kind)
                return state.conn
            adapter = self._take_idle(connector.kind, None)
            for attempt in (1, 2):
                if adapter is None:
                    try:
                        # A fresh context: nothing the connection keeps (I/O callbacks
                        # copy the context) may hold on to this owner.
                        adapter = contextvars.Context().run(connector.connect)
                    except Exception as exc:
                        raise self._connect_error(state, connector.kind, exc) from exc
                if not state.sandboxed:
                    self._sequences_moved()
                    break
                try:
                    epoch = self._epoch
                    options = self._begin_options(state, adapter)
                    adapter.begin(state.isolation_level, **options)
                    self._begun(adapter, options, epoch)
                    break
                except Exception as exc:
                    broken = adapter.is_broken()
                    _close_quietly(adapter)
                    adapter = None
                    if not broken or attempt == 2:
                        raise self._connect_error(state, connector.kind, exc) from exc
            assert adapter is not None
            conn = OwnedConnection(adapter, state, is_async=False)
            self._track(conn)
            if register:
                state.conn = conn
            if state.status != "active":
                # Checked in (or timed out) while we were opening: give it back.
                state.conn = None
                self._release_sync(conn)
                raise state.stale_error()
            return conn
        finally:
            if register:
                state.open_lock.release()

    async def _open_async(
        self, state: OwnerState, connector: AsyncConnector, *, register: bool = False
    ) -> OwnedConnection:
        if not connector.is_async:
            raise ConfigError(f"{connector.kind} is a blocking driver: use checkout() / lease().")
        holder = current_holder()
        if (
            register
            and not state.open_lock.try_acquire(holder)
            and not await state.open_lock.aacquire(holder, self.queue_timeout)
        ):
            raise OwnershipError(f"Timed out waiting to open owner {state.name!r}'s connection.")
        try:
            if state.conn is not None:
                if state.conn.kind != connector.kind:
                    raise self._two_drivers(state, state.conn.kind, connector.kind)
                return state.conn
            running = asyncio.get_running_loop()
            host = None
            loop: asyncio.AbstractEventLoop | None = None
            if connector.loop_bound:
                if threading.get_ident() != state.thread_ident:
                    # Used from a thread other than the owner's (a TestClient portal):
                    # requests may each run on a new loop, so keep it on the host loop.
                    host = host_loop()
                    loop = host.loop
                else:
                    loop = running
            adapter = self._take_idle(connector.kind, loop)
            for attempt in (1, 2):
                if adapter is None:
                    try:
                        adapter = await self._aconnect(connector, host)
                    except Exception as exc:
                        raise self._connect_error(state, connector.kind, exc) from exc
                if not state.sandboxed:
                    self._sequences_moved()
                    break
                try:
                    epoch = self._epoch
                    options = self._begin_options(state, adapter)
                    coro2 = adapter.begin(state.isolation_level, **options)
                    await (host.run(coro2) if host is not None else coro2)
                    self._begun(adapter, options, epoch)
                    break
                except Exception as exc:
                    broken = adapter.is_broken()
                    _discard_quietly(adapter, loop)
                    adapter = None
                    if not broken or attempt == 2:
                        raise self._connect_error(state, connector.kind, exc) from exc
            assert adapter is not None
            conn = OwnedConnection(adapter, state, is_async=True, host=host, loop=loop)
            self._track(conn)
            if register:
                state.conn = conn
            if state.status != "active":
                state.conn = None
                await self._release_async(conn)
                raise state.stale_error()
            return conn
        finally:
            if register:
                state.open_lock.release()

    async def _aconnect(self, connector: AsyncConnector, host: HostLoop | None) -> AsyncAdapter:
        # A fresh context: a connection keeps the context of its I/O callbacks
        # (asyncio copies it), which must not hold on to the opening owner.
        context = contextvars.Context()
        if host is not None:
            return await host.run(connector.connect(), context=context)
        loop = asyncio.get_running_loop()
        return await loop.create_task(connector.connect(), context=context)

    # ------------------------------------------------------------------------------
    # Idle connections and releasing
    # ------------------------------------------------------------------------------

    def _take_idle(self, kind: str, loop: asyncio.AbstractEventLoop | None) -> Any:
        dead: list[tuple[Any, asyncio.AbstractEventLoop | None]] = []
        adapter = None
        with self._lock:
            closed = []
            for key in self._idle:
                if key[1] is not None and key[1].is_closed():
                    closed.append(key)
            for key in closed:
                dead.extend((a, key[1]) for a in self._idle.pop(key))
            pool = self._idle.get((kind, loop))
            if pool and self._restore_debt:
                # Only a connection with a trusted baseline can pay the debt.
                pool.sort(key=lambda a: getattr(a, "resets", False) and self._trusted(a))
            while pool and adapter is None:
                candidate = pool.pop()
                if candidate.is_broken():
                    dead.append((candidate, loop))
                else:
                    adapter = candidate
        for item, item_loop in dead:
            _discard_quietly(item, item_loop)
        return adapter

    def _keep_idle(self, adapter: Any, loop: asyncio.AbstractEventLoop | None) -> bool:
        with self._lock:
            if self._closed:
                return False
            pool = self._idle.setdefault((adapter.kind, loop), [])
            if len(pool) >= self.max_idle:
                return False
            pool.append(adapter)
            return True

    def _release_sync(self, conn: OwnedConnection) -> None:
        """Roll back and return a blocking owner connection (or discard it)."""
        if conn.state != "open":
            conn.state = "closed"
            return
        if not conn.lock.try_acquire(CHECKIN):
            # Another thread is mid-query: abort it; it closes the connection itself.
            conn.state = "doomed"
            conn.interrupt()
            return
        adapter: SyncAdapter = conn.adapter
        error: BaseException | None = None
        healthy = True
        try:
            if conn.sandboxed:
                if adapter.in_transaction() is False:
                    healthy = False
                    error = _implicit_commit_error(conn)
                elif self.check_deferred_on_checkin:
                    try:
                        adapter.check_deferred(keep=True)
                    except Exception as exc:
                        error = deferred_error(conn, exc)
                if healthy:
                    adapter.rollback(**self._checkin_options(conn))
            elif conn.stack:
                adapter.rollback()
        except Exception:
            healthy = False
        finally:
            conn.forget_stack()
            conn.state = "closed"
            conn.lock.force_release()
        keep = healthy and self._keep_after(conn) and not adapter.is_broken()
        if not (keep and self._keep_idle(adapter, None)):
            _close_quietly(adapter)
        if error is not None:
            raise error

    async def _release_body(self, conn: OwnedConnection) -> BaseException | None:
        """Roll back an asyncio owner connection on its own loop; return a deferred error."""
        adapter: AsyncAdapter = conn.adapter
        error: BaseException | None = None
        healthy = True
        try:
            if conn.sandboxed:
                if adapter.in_transaction() is False:
                    healthy = False
                    error = _implicit_commit_error(conn)
                elif self.check_deferred_on_checkin:
                    try:
                        await adapter.check_deferred(keep=True)
                    except Exception as exc:
                        error = deferred_error(conn, exc)
                if healthy:
                    await adapter.rollback(**self._checkin_options(conn))
            elif conn.stack:
                await adapter.rollback()
        except Exception:
            healthy = False
        finally:
            conn.forget_stack()
            conn.state = "closed"
            conn.lock.force_release()
        keep = healthy and self._keep_after(conn) and not adapter.is_broken()
        if not (keep and self._keep_idle(adapter, conn.loop)):
            try:
                await adapter.close()
            except Exception:
                adapter.discard()
        return error

    def _claim(self, conn: OwnedConnection) -> bool:
        """Take the connection for release; False if it is lost or busy (then doomed)."""
        if conn.state != "open":
            conn.state = "closed"
            return False
        if not conn.lock.try_acquire(CHECKIN):
            conn.state = "doomed"
            conn.interrupt()
            return False
        return True

    async def _release_async(self, conn: OwnedConnection) -> None:
        """Release an asyncio owner connection from a coroutine."""
        if not self._claim(conn):
            return
        error = await self._run_on(conn, self._release_body(conn))
        if error is not None:
            raise error

    def _release_async_blocking(self, conn: OwnedConnection) -> None:
        """Release an asyncio owner connection from blocking code."""
        if not self._claim(conn):
            return
        error = self._run_on_blocking(conn, self._release_body(conn))
        if error is not None:
            raise error

    def _release_anywhere(self, conn: OwnedConnection) -> None:
        """Release from the timer thread (owner gone, mode switch); never raise."""
        try:
            if conn.is_async:
                self._release_async_blocking(conn)
            else:
                self._release_sync(conn)
        except Exception:
            pass

    async def _run_on(self, conn: OwnedConnection, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await *coro* on the loop the connection needs, from any loop."""
        loop = conn.loop
        running = asyncio.get_running_loop()
        if loop is None or loop is running:
            return await coro
        if conn.host is not None or loop.is_running():
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
        coro.close()
        return self._abandon(conn)

    def _run_on_blocking(self, conn: OwnedConnection, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run *coro* to completion from blocking code, on the loop the connection needs."""
        loop = conn.loop
        if loop is None:
            return host_loop().run_sync(coro)
        if conn.host is not None or (loop.is_running() and loop is not running_loop()):
            future = asyncio.run_coroutine_threadsafe(coro, loop)
            try:
                # Bounded: that loop may be blocked, waiting on this very thread.
                return future.result(timeout=_RELEASE_TIMEOUT)
            except TimeoutError:
                future.cancel()
                return self._abandon(conn)
        if (
            not loop.is_closed()
            and not loop.is_running()
            and running_loop() is None
            and threading.current_thread() is threading.main_thread()
        ):
            # An idle loop of the main thread (pytest-asyncio's, between tests).
            return loop.run_until_complete(coro)
        coro.close()
        return self._abandon(conn)

    def _abandon(self, conn: OwnedConnection) -> None:
        """The connection's loop is gone: drop the connection; the server rolls back."""
        conn.forget_stack()
        conn.state = "closed"
        conn.discard_adapter()
        conn.lock.force_release()
        return None

    def _close_idle(self) -> None:
        """Close every idle connection, each on the loop it belongs to."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for (_kind, loop), adapters in idle.items():
            for adapter in adapters:
                if not inspect.iscoroutinefunction(adapter.close):
                    _close_quietly(adapter)
                elif loop is None or loop is host_loop().loop:
                    try:
                        host_loop().run_sync(adapter.close(), timeout=10)
                    except Exception:
                        _discard_quietly(adapter, loop)
                elif loop.is_running() and loop is not running_loop():
                    try:
                        asyncio.run_coroutine_threadsafe(adapter.close(), loop).result(10)
                    except Exception:
                        _discard_quietly(adapter, loop)
                elif not loop.is_closed() and not loop.is_running():
                    try:
                        loop.run_until_complete(adapter.close())
                    except Exception:
                        _discard_quietly(adapter, loop)
                else:
                    _discard_quietly(adapter, loop)

    async def _aclose_idle(self) -> None:
        """Close the idle connections of the running loop with their own protocol."""
        running = asyncio.get_running_loop()
        with self._lock:
            mine = {k: v for k, v in self._idle.items() if k[1] is running}
            for key in mine:
                del self._idle[key]
        for adapters in mine.values():
            for adapter in adapters:
                try:
                    await adapter.close()
                except Exception:
                    adapter.discard()


def _close_quietly(adapter: Any) -> None:
    try:
        adapter.close()
    except Exception:
        pass


def _discard_quietly(adapter: Any, loop: asyncio.AbstractEventLoop | None) -> None:
    try:
        if loop is not None and not loop.is_closed() and loop is not running_loop():
            loop.call_soon_threadsafe(adapter.discard)
        else:
            adapter.discard()
    except Exception:
        pass


def _implicit_commit_error(conn: OwnedConnection) -> OwnershipError:
    name = conn.owner.name if conn.owner is not None else "?"
    return OwnershipError(
        f"The transaction of owner {name!r} was no longer open at checkin: a statement "
        "ended it (DDL that MariaDB/MySQL commits implicitly, or a raw COMMIT/ROLLBACK), so "
        "what the test wrote may have been committed for real. Give such tests a database "
        f'of their own with @pytest.mark.sandbox(isolation="database"). See {DOCS_PAGE}#mariadb-ddl'
    )


def deferred_error(conn: OwnedConnection, exc: BaseException) -> SandboxError:
    """Return the error to raise when checking deferred constraints failed with *exc*."""
    name = conn.owner.name if conn.owner is not None else "?"
    return SandboxError(
        f"A deferred constraint of owner {name!r}'s transaction is violated: "
        f"{type(exc).__name__}: {str(exc).strip()}. The data this test wrote would fail "
        f"at COMMIT in production. See {DOCS_PAGE}#deferred-constraints"
    )
