"""The Sandbox: Ecto-style connection ownership over one database.

An *owner* checks out a connection; its transaction is rolled back at
checkin. The owner travels in a context variable, so tasks and
``asyncio.to_thread`` calls it starts use the same connection. Others need
an allowance (``allow``), an owner token (``join``), or shared mode.

Drivers ask :meth:`Sandbox.lease` / :meth:`Sandbox.alease` for the calling
code's connection each time the app takes one from its pool; the sandbox
answers with a :class:`~._connection.Lease` on the owner's connection, None
(use a plain connection: auto mode, ``unboxed``), or an OwnershipError.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, Union, cast

from .._exceptions import ConfigError, OwnershipError, SandboxError
from .._urls import DatabaseURL
from ._adapter import normalize_isolation_level
from ._connection import CHECKIN, Lease
from ._connections import ConnectionsMixin, deferred_error, running_loop
from ._lock import running_task
from ._messages import DOCS_PAGE, caller_name, describe, not_owner
from ._owner import Owner, OwnerState
from ._registry import register_sandbox
from ._timer import call_later, call_soon

if TYPE_CHECKING:
    from ._adapter import AsyncConnector, Connector

__all__ = ["Mode", "Sandbox"]

Mode = Literal["manual", "auto", "shared"]
OwnerLike = Union["Owner", str, "asyncio.Task[Any]", threading.Thread, None]
MODES: tuple[Mode, ...] = ("manual", "auto", "shared")


class _Binding:
    """What the context variable holds: an owner, as owner or as allowed.

    The handle is held weakly: contexts are copied into every task, thread
    and I/O callback (asyncpg's statement cache keeps one for minutes), so a
    strong reference would keep an ended owner alive. What keeps an owner
    alive is its handle in user code, or the task or thread that checked out,
    until it ends.
    """

    __slots__ = ("allowed", "ref", "state")

    def __init__(self, state: OwnerState, *, allowed: bool) -> None:
        self.state = state
        self.ref = state.handle_ref
        self.allowed = allowed

    @property
    def live(self) -> bool:
        ref = self.ref
        return self.state.status == "active" and ref is not None and ref() is not None


_UNBOXED = _Binding.__new__(_Binding)
_UNSET: Any = object()


_current_task = running_task


def _owner_gone(sandbox_ref: weakref.ref[Sandbox], token: str, ref: weakref.ref[Owner]) -> None:
    """Weakref callback of an Owner handle: nothing can reach the owner any more.

    The callback holds the token, not the state (which holds the weakref): no
    reference cycle to collect for every checkout.
    """
    sandbox = sandbox_ref()
    if sandbox is None:
        return
    state = sandbox._owners.get(token)
    if state is not None and state.handle_ref is ref and state.status == "active":
        # next() on a count is atomic, unlike += on an attribute.
        sandbox._gone = max(sandbox._gone, next(sandbox._gone_counter))
        call_soon(lambda: sandbox._reap(state))


class Sandbox(ConnectionsMixin):
    """Connection ownership over one database.

    Args:
        url: the database this sandbox serves (used in messages and to check
            that routed engines point at it); optional.
        name: how messages call the sandbox; defaults to the masked URL.
        mode: ``"manual"`` (unowned access raises OwnershipError), ``"auto"``
            (unowned callers get plain connections whose writes are NOT
            rolled back) or ``"shared"`` (set with :meth:`mode` and an owner).
        ownership_timeout: seconds an owner may hold its connection before
            the sandbox takes it back and closes it; None or 0 disables.
        queue_timeout: seconds a user of an owner's connection waits for its
            turn behind the others before OwnershipError.
        isolation_level: run each owner's transaction at this level (for
            example ``"SERIALIZABLE"``), set right at BEGIN.
        check_deferred_on_checkin: check deferred constraints (``SET
            CONSTRAINTS ALL IMMEDIATE``) before every checkin's rollback, so a
            test that breaks one fails.
        max_idle: connections per kind kept open between owners.
        reset_sequences: at checkin, put back the sequences (PostgreSQL) and
            AUTO_INCREMENT counters (MariaDB/MySQL) the owner advanced, so
            every test's first insert gets the same id.
    """

    def __init__(
        self,
        url: str | DatabaseURL | None = None,
        *,
        name: str | None = None,
        mode: Mode = "manual",
        ownership_timeout: float | None = 120.0,
        queue_timeout: float | None = 15.0,
        isolation_level: str | None = None,
        check_deferred_on_checkin: bool = False,
        max_idle: int = 4,
        reset_sequences: bool = True,
    ) -> None:
        if mode not in ("manual", "auto"):
            raise ConfigError(
                f"Sandbox(mode={mode!r}): start in 'manual' or 'auto'; shared mode needs an "
                "owner, set it with sandbox.mode('shared', owner)."
            )
        self.url = DatabaseURL.parse(url) if url is not None else None
        self.name = name or (self.url.masked() if self.url is not None else "sandbox")
        self.ownership_timeout = ownership_timeout or None
        self.queue_timeout = queue_timeout
        self.isolation_level = normalize_isolation_level(isolation_level)
        self.check_deferred_on_checkin = check_deferred_on_checkin
        self.max_idle = max_idle
        self._init_resets(reset_sequences)
        self._var: contextvars.ContextVar[_Binding | None] = contextvars.ContextVar(
            f"sqlsandbox_owner_{id(self):x}", default=None
        )
        self._lock = threading.RLock()
        self._mode: Mode = mode
        self._shared: OwnerState | None = None
        self._owners: dict[str, OwnerState] = {}
        self._tokens: dict[str, OwnerState] = {}
        self._allowed: weakref.WeakKeyDictionary[object, OwnerState] = weakref.WeakKeyDictionary()
        # Whether _allowed was ever used: even len() of a WeakKeyDictionary is a Python call.
        self._any_allowed = False
        self._idle: dict[tuple[str, asyncio.AbstractEventLoop | None], list[Any]] = {}
        self._connectors: list[Connector | AsyncConnector] = []
        self._closed = False
        self._self_ref = weakref.ref(self)
        # What keeps an owner alive besides its handle in user code.
        self._task_holders: dict[asyncio.Task[Any], dict[str, Owner]] = {}
        self._tls = threading.local()
        # Owners collected without checkin, and how many of them were reaped.
        self._gone_counter = itertools.count(1)
        self._gone = 0
        self._reaped = 0
        self._reaped_cond = threading.Condition()
        # HTTP middleware finds the sandbox behind an owner token here.
        register_sandbox(self)

    def __repr__(self) -> str:
        return f"<Sandbox {self.name} mode={self._mode} owners={len(self._owners)}>"

    # ------------------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------------------

    @property
    def owners(self) -> list[Owner]:
        """The active owners (handles that are still referenced)."""
        with self._lock:
            states = list(self._owners.values())
        return [h for h in (_handle(s) for s in states) if h is not None]

    def current_owner(self) -> Owner | None:
        """Return the owner whose connection the calling code would use, or None."""
        state = self._lookup()
        return _handle(state) if state is not None else None

    def add_connector(self, connector: Connector | AsyncConnector) -> None:
        """Register a driver's connector; the first one serves eager checkouts."""
        with self._lock:
            if not any(c.kind == connector.kind for c in self._connectors):
                self._connectors.append(connector)

    def remove_connector(self, connector: Connector | AsyncConnector) -> None:
        with self._lock:
            if connector in self._connectors:
                self._connectors.remove(connector)

    # ------------------------------------------------------------------------------
    # Modes
    # ------------------------------------------------------------------------------

    def mode(self, mode: Mode | None = None, owner: Owner | str | None = None) -> Mode:
        """Return the mode, or set it first when *mode* is given.

        ``mode("shared", owner)`` makes every caller without an owner use
        *owner*'s connection (default: the calling code's owner) and checks
        in every other owner. When the shared owner ends, the mode goes back
        to manual. ``"auto"`` hands unowned callers plain connections whose
        writes are NOT rolled back.
        """
        if mode is None:
            return self._mode
        if mode not in MODES:
            raise ConfigError(f"Unknown sandbox mode {mode!r}: use one of {', '.join(MODES)}.")
        if mode != "shared":
            with self._lock:
                self._mode = mode
                self._shared = None
            return mode
        state = self._find(owner, purpose="set shared mode")
        with self._lock:
            current = self._shared
            if current is not None and current is not state and current.status == "active":
                raise OwnershipError(
                    f"Cannot share owner {state.name!r}: the sandbox is already shared with "
                    f"owner {current.name!r}, which is still checked out. Check it in (or set "
                    f"sandbox.mode('manual')) first. See {DOCS_PAGE}#modes"
                )
            self._shared = state
            self._mode = "shared"
            others = [s for s in self._owners.values() if s is not state]
            for other in others:
                self._retire(other, "checked_in")
        for other in others:
            conn, other.conn = other.conn, None
            if conn is not None:
                call_soon(functools.partial(self._release_anywhere, conn))
        return "shared"

    # ------------------------------------------------------------------------------
    # Checkout / checkin
    # ------------------------------------------------------------------------------

    def _new_owner(
        self,
        *,
        sandbox: bool,
        name: str | None,
        ownership_timeout: float | None,
        isolation_level: str | None,
    ) -> OwnerState:
        if self._closed:
            raise SandboxError(f"Sandbox {self.name} is closed; create a new one.")
        binding = self._var.get()
        if binding is not None and binding is not _UNBOXED:
            current = binding.state
            if binding.live:
                if binding.allowed:
                    raise OwnershipError(
                        f"{caller_name()} is already allowed to use the connection of owner "
                        f"{current.name!r}, so it cannot check out one of its own. Leave the "
                        f"`join`/allowance first, or run the checkout in a new task. "
                        f"See {DOCS_PAGE}#checkout"
                    )
                raise OwnershipError(
                    f"{caller_name()} is already owner {current.name!r} of a connection of "
                    f"sandbox {self.name}; a context owns at most one. Use that connection, "
                    "or check it in before checking out again. "
                    f"See {DOCS_PAGE}#checkout"
                )
        timeout = self.ownership_timeout if ownership_timeout is _UNSET else ownership_timeout
        if isolation_level is _UNSET:
            level = self.isolation_level  # normalized already
        else:
            level = normalize_isolation_level(isolation_level)
        return OwnerState(
            self,
            name=name or caller_name(),
            sandboxed=sandbox,
            isolation_level=level,
            timeout=timeout or None,
            thread_ident=threading.get_ident(),
            task=_current_task(),
        )

    def _register(self, state: OwnerState) -> Owner:
        handle = Owner(state)
        token = state.token
        state.handle_ref = weakref.ref(
            handle, functools.partial(_owner_gone, self._self_ref, token)
        )
        with self._lock:
            self._owners[token] = state
            self._tokens[token] = state
        if state.timeout:
            state_ref = weakref.ref(state)
            state.timer = call_later(state.timeout, lambda: self._expire(state_ref))
        self._var.set(_Binding(state, allowed=False))
        task_ref = state.task_ref
        task = task_ref() if task_ref is not None else None
        if task is not None:
            # The task keeps its owner until it is done (its done callbacks run
            # before whoever awaits it resumes).
            held = self._task_holders.get(task)
            if held is None:
                held = self._task_holders[task] = {}
                task.add_done_callback(self._drop_task_holder)
            held[token] = handle
        else:
            # Thread-local storage is freed when the thread ends.
            held = self._tls.__dict__.setdefault("owners", {})
            held[token] = handle
        return handle

    def checkout(
        self,
        *,
        sandbox: bool = True,
        lazy: bool = False,
        name: str | None = None,
        ownership_timeout: float | None = _UNSET,
        isolation_level: str | None = _UNSET,
        connector: Connector | None = None,
    ) -> Owner:
        """Make the calling context an owner and return its handle.

        The connection opens its transaction at once, so connection errors
        surface here; with ``lazy=True`` nothing is opened until a driver
        first asks (no I/O here, and the driver's own kind of connection is
        used). ``sandbox=False`` gives a plain connection whose writes
        COMMIT. *name* appears in messages (the plugin passes the test id).
        """
        state = self._new_owner(
            sandbox=sandbox,
            name=name,
            ownership_timeout=ownership_timeout,
            isolation_level=isolation_level,
        )
        if not lazy:
            if connector is None:
                connector = cast("Connector", self._default_connector(is_async=False))
            state.conn = self._open_sync(state, connector)
        return self._register(state)

    async def acheckout(
        self,
        *,
        sandbox: bool = True,
        lazy: bool = False,
        name: str | None = None,
        ownership_timeout: float | None = _UNSET,
        isolation_level: str | None = _UNSET,
        connector: Connector | AsyncConnector | None = None,
    ) -> Owner:
        """Async twin of :meth:`checkout`; the owner is the calling task's context."""
        state = self._new_owner(
            sandbox=sandbox,
            name=name,
            ownership_timeout=ownership_timeout,
            isolation_level=isolation_level,
        )
        if not lazy:
            chosen = connector or self._default_connector(is_async=True)
            if chosen.is_async:
                state.conn = await self._open_async(state, chosen)
            else:
                state.conn = await asyncio.to_thread(self._open_sync, state, chosen)
        return self._register(state)

    def _default_connector(self, *, is_async: bool) -> Connector | AsyncConnector:
        with self._lock:
            candidates = [c for c in self._connectors if is_async or not c.is_async]
        if not candidates:
            raise ConfigError(
                f"Sandbox {self.name} has no driver to open a connection with: route an engine "
                "first (sqlsandbox.sqlalchemy.install(engine, sandbox)), pass connector=..., or "
                "use checkout(lazy=True) to open the connection on first use."
            )
        return candidates[0]

    def _checkin_target(self, owner: Owner | str | None) -> OwnerState | None:
        if owner is None:
            binding = self._var.get()
            if binding is None or binding is _UNBOXED:
                raise OwnershipError(
                    f"{caller_name()} has nothing to check in: it is not an owner of sandbox "
                    f"{self.name}. Pass the owner handle: sandbox.checkin(owner)."
                )
            if binding.allowed:
                raise OwnershipError(
                    f"{caller_name()} is only allowed to use the connection of owner "
                    f"{binding.state.name!r} and cannot check it in; only the owner can. "
                    f"See {DOCS_PAGE}#checkin"
                )
            state = binding.state
        elif isinstance(owner, Owner):
            state = owner._s
        else:
            found = self._tokens.get(owner)
            if found is None:
                return None
            state = found
        return state if state.status == "active" else None

    def _forget_binding(self, state: OwnerState) -> None:
        binding = self._var.get()
        if binding is not None and binding is not _UNBOXED and binding.state is state:
            self._var.set(None)

    def checkin(self, owner: Owner | str | None = None) -> None:
        """Roll back the owner's transaction, revoke its allowances, return the connection.

        Without *owner*, checks in the calling context's ownership; a context
        that is only allowed is refused. Checking in twice does nothing.
        """
        state = self._checkin_target(owner)
        if state is None:
            return
        conn = state.conn
        if conn is not None and conn.is_async and conn.host is None and conn.loop is not None:
            if conn.loop is running_loop():
                raise OwnershipError(
                    f"checkin() cannot roll back owner {state.name!r}'s asyncio connection "
                    "from inside its own running event loop: use `await sandbox.acheckin()`."
                )
        if not self._retire(state, "checked_in"):
            return
        self._forget_binding(state)
        state.conn = None
        if conn is None:
            return
        if conn.is_async:
            self._release_async_blocking(conn)
        else:
            self._release_sync(conn)

    async def acheckin(self, owner: Owner | str | None = None) -> None:
        """Async twin of :meth:`checkin`."""
        state = self._checkin_target(owner)
        if state is None or not self._retire(state, "checked_in"):
            return
        self._forget_binding(state)
        conn, state.conn = state.conn, None
        if conn is None:
            return
        if conn.is_async:
            await self._release_async(conn)
        else:
            await asyncio.to_thread(self._release_sync, conn)

    def _retire(self, state: OwnerState, status: Literal["checked_in", "expired"]) -> bool:
        """Mark *state* ended and forget every way to reach it; False if already ended."""
        with self._lock:
            if state.status != "active":
                return False
            state.status = status
            self._owners.pop(state.token, None)
            self._tokens.pop(state.token, None)
            for alias in state.aliases:
                if self._tokens.get(alias) is state:
                    del self._tokens[alias]
            if self._any_allowed:
                for key, value in list(self._allowed.items()):
                    if value is state:
                        del self._allowed[key]
            if self._shared is state:
                self._shared = None
                self._mode = "manual"
        if state.timer is not None:
            state.timer.cancel()
        # Nothing to reap once retired: without the weakref, its callback never runs.
        state.handle_ref = None
        task_ref = state.task_ref
        task = task_ref() if task_ref is not None else None
        held = (
            self._task_holders.get(task) if task is not None else self._tls.__dict__.get("owners")
        )
        if held is not None:
            held.pop(state.token, None)
        return True

    def _drop_task_holder(self, task: asyncio.Task[Any]) -> None:
        self._task_holders.pop(task, None)

    # -- owners that end without checkin, and timeouts -------------------------------

    def _reap(self, state: OwnerState) -> None:
        """Check in an owner nobody refers to any more (timer thread)."""
        try:
            if self._retire(state, "checked_in"):
                conn, state.conn = state.conn, None
                if conn is not None:
                    self._release_anywhere(conn)
        finally:
            with self._reaped_cond:
                self._reaped += 1
                self._reaped_cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until owners that ended without checkin have been checked in.

        Returns False if *timeout* passed first. Useful at the end of a test
        session, or in tests of the sandbox itself.
        """
        with self._reaped_cond:
            return self._reaped_cond.wait_for(lambda: self._reaped >= self._gone, timeout)

    def _expire(self, state_ref: weakref.ref[OwnerState]) -> None:
        """Take the connection back from an owner past its timeout (timer thread)."""
        state = state_ref()
        if state is None or not self._retire(state, "expired"):
            return
        conn, state.conn = state.conn, None
        if conn is None:
            return
        if conn.lock.try_acquire(CHECKIN):
            conn.state = "closed"
            conn.forget_stack()
            conn.discard_adapter()
            conn.lock.force_release()
        else:
            conn.state = "doomed"
            conn.interrupt()

    # ------------------------------------------------------------------------------
    # Allowances, tokens, unboxed
    # ------------------------------------------------------------------------------

    def _lookup(self) -> OwnerState | None:
        """Return the owner the calling code may use, without raising."""
        binding = self._var.get()
        if binding is not None:
            if binding is _UNBOXED:
                return None
            return binding.state if binding.live else None
        if self._any_allowed and self._allowed:
            task = _current_task()
            found = self._allowed.get(task) if task is not None else None
            if found is None:
                found = self._allowed.get(threading.current_thread())
            if found is not None and found.status == "active":
                return found
        shared = self._shared
        if shared is not None and shared.status == "active":
            return shared
        return None

    def _resolve(self) -> OwnerState | None:
        """Return the owner for a database access, None for a plain connection, or raise."""
        binding = self._var.get()
        if binding is not None:
            if binding is _UNBOXED:
                self._sequences_moved()  # a plain connection: its writes commit
                return None
            if binding.live:
                return binding.state
            raise binding.state.stale_error()
        found = self._lookup()
        if found is not None:
            return found
        if self._mode == "auto":
            self._sequences_moved()
            return None
        with self._lock:
            names = [s.name for s in self._owners.values()]
        raise not_owner(self.name, self._mode, names)

    def _find(self, owner: object, *, purpose: str) -> OwnerState:
        """Resolve what allow()/join()/mode() were given to an active owner."""
        state: OwnerState | None = None
        if owner is None:
            state = self._lookup()
        elif isinstance(owner, Owner):
            state = owner._s
        elif isinstance(owner, str):
            state = self._tokens.get(owner)
        elif isinstance(owner, asyncio.Task):
            if owner is _current_task():
                state = self._lookup()
            else:
                state = self._allowed.get(owner)
                if state is None:
                    with self._lock:
                        state = next((s for s in self._owners.values() if s.task is owner), None)
        elif isinstance(owner, threading.Thread):
            if owner is threading.current_thread():
                state = self._lookup()
            else:
                state = self._allowed.get(owner)
                if state is None:
                    with self._lock:
                        state = next(
                            (
                                s
                                for s in self._owners.values()
                                if s.thread_ident == owner.ident and s.task is None
                            ),
                            None,
                        )
        else:
            raise TypeError(
                f"expected an Owner, a token string, an asyncio.Task or a threading.Thread, "
                f"got {type(owner).__name__}"
            )
        if state is None or state.status != "active":
            what = "the calling code" if owner is None else describe(owner)
            raise OwnershipError(
                f"Cannot {purpose}: owner not found. {what} owns no connection of sandbox "
                f"{self.name} and is not allowed to use one (an owner that checked in or "
                f"timed out is gone too). Pass the test's Owner handle or its token. "
                f"See {DOCS_PAGE}#allow"
            )
        return state

    def allow(
        self, owner: Owner | str | asyncio.Task[Any] | threading.Thread | None, target: Any
    ) -> None:
        """Let *target* use *owner*'s connection until the owner checks in.

        *owner* is an Owner handle, a token, or a task or thread that owns or
        is allowed (allowances are transitive); None means the calling code.
        *target* is an ``asyncio.Task``, a ``threading.Thread``, or a string
        token of your choosing (for example an HTTP header value) that
        ``join`` later accepts.
        """
        state = self._find(owner, purpose=f"allow {describe(target)}")
        with self._lock:
            if isinstance(target, str):
                taken = self._tokens.get(target)
                if taken is not None and taken is not state:
                    raise OwnershipError(
                        f"Token {target[:24]!r} already belongs to owner {taken.name!r}; "
                        "choose a unique token per owner."
                    )
                self._tokens[target] = state
                state.aliases = (*state.aliases, target)
            elif isinstance(target, asyncio.Task | threading.Thread):
                self._allowed[target] = state
                self._any_allowed = True
            else:
                raise TypeError(
                    "allow() target must be an asyncio.Task, a threading.Thread or a token "
                    f"string, got {type(target).__name__}"
                )

    def revoke(self, target: Any) -> None:
        """Withdraw an allowance given to a task, thread or token."""
        with self._lock:
            if isinstance(target, str):
                state = self._tokens.get(target)
                if state is not None and state.token != target:
                    del self._tokens[target]
            else:
                self._allowed.pop(target, None)

    @contextmanager
    def join(self, token: str | Owner) -> Iterator[Owner]:
        """Run the block with the connection of the owner behind *token*.

        For code that inherits nothing from the test: an HTTP middleware
        reading the owner token from a header, a worker thread, a callback.
        The block is only *allowed*: it cannot check the owner in.
        """
        state = self._find(token, purpose="join an owner")
        handle = _handle(state)
        if handle is None:
            raise state.stale_error()
        reset = self._var.set(_Binding(state, allowed=True))
        try:
            yield handle
        finally:
            self._var.reset(reset)

    @contextmanager
    def unboxed(self) -> Iterator[None]:
        """Run the block outside the sandbox: drivers give it plain connections.

        Writes made inside commit for real and stay after the test: use it
        for data that must survive (then delete it yourself).
        """
        reset = self._var.set(_UNBOXED)
        try:
            yield
        finally:
            self._var.reset(reset)

    # ------------------------------------------------------------------------------
    # Leases: what drivers call
    # ------------------------------------------------------------------------------

    def lease(self, connector: Connector) -> Lease | None:
        """Return a lease on the calling code's owner connection, opening it if needed.

        None means: use a plain, unsandboxed connection (auto mode or
        ``unboxed``). Raises OwnershipError when the caller may not use the
        database, or when the owner already uses another kind of connection.
        """
        state = self._resolve()
        if state is None:
            return None
        conn = state.conn
        if conn is None:
            conn = self._open_sync(state, connector, register=True)
        elif conn.kind != connector.kind:
            raise self._two_drivers(state, conn.kind, connector.kind)
        return Lease(conn)

    async def alease(self, connector: AsyncConnector) -> Lease | None:
        """Async twin of :meth:`lease`."""
        state = self._resolve()
        if state is None:
            return None
        conn = state.conn
        if conn is None:
            conn = await self._open_async(state, connector, register=True)
        elif conn.kind != connector.kind:
            raise self._two_drivers(state, conn.kind, connector.kind)
        elif conn.host is None and conn.loop is not None and conn.loop is not running_loop():
            raise OwnershipError(
                f"Owner {state.name!r}'s {conn.kind} connection belongs to the event loop "
                f"that opened it, and {caller_name()} runs on another loop. This happens when "
                "an async test calls an async app through a synchronous client (Starlette's "
                "TestClient runs the app on a loop of its own): use "
                "httpx.AsyncClient(transport=httpx.ASGITransport(app)) in async tests, or "
                'give the test its own database with @pytest.mark.sandbox(isolation="database"). '
                f"See {DOCS_PAGE}#event-loops"
            )
        return Lease(conn)

    def lease_nowait(self, connector: AsyncConnector) -> Lease | Literal[False] | None:
        """Return what :meth:`alease` would, without I/O, or False if it has to open.

        For drivers that run inside synchronous code on an event loop (such as
        SQLAlchemy's greenlets): after the owner's connection is open, leases
        need no round trip to the event loop.
        """
        state = self._resolve()
        if state is None:
            return None
        conn = state.conn
        if conn is None:
            return False
        if conn.kind != connector.kind:
            raise self._two_drivers(state, conn.kind, connector.kind)
        if conn.host is None and conn.loop is not None and conn.loop is not running_loop():
            return False  # alease() explains the loop mismatch
        return Lease(conn)

    def check_deferred(self) -> None:
        """Check the owner's deferred constraints now (PostgreSQL), without side effects.

        Raises SandboxError naming the violated constraint; the owner's
        transaction stays usable.
        """
        state = self._resolve()
        conn = state.conn if state is not None else None
        if conn is None:
            return
        if conn.is_async:
            raise OwnershipError(
                "check_deferred() cannot run on an asyncio connection: use "
                "`await sandbox.acheck_deferred()`."
            )
        conn.enter()
        try:
            conn.adapter.check_deferred(keep=False)
        except Exception as exc:
            conn.exit_with(exc)
            raise deferred_error(conn, exc) from exc
        conn.exit()

    async def acheck_deferred(self) -> None:
        """Async twin of :meth:`check_deferred`."""
        state = self._resolve()
        conn = state.conn if state is not None else None
        if conn is None:
            return
        if not conn.is_async:
            await asyncio.to_thread(contextvars.copy_context().run, self.check_deferred)
            return
        await conn.aenter()
        try:
            coro = conn.adapter.check_deferred(keep=False)
            await (conn.host.run(coro) if conn.host is not None else coro)
        except Exception as exc:
            conn.exit_with(exc)
            raise deferred_error(conn, exc) from exc
        conn.exit()

    # ------------------------------------------------------------------------------
    # Closing
    # ------------------------------------------------------------------------------

    def close(self) -> None:
        """Check in every owner and close idle connections; the sandbox is unusable after."""
        with self._lock:
            self._closed = True
            states = list(self._owners.values())
        for state in states:
            if self._retire(state, "checked_in"):
                conn, state.conn = state.conn, None
                if conn is not None:
                    self._release_anywhere(conn)
        self._close_idle()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`: closes connections of the running loop politely."""
        await self._aclose_idle()
        await asyncio.to_thread(self.close)


def _handle(state: OwnerState) -> Owner | None:
    ref = state.handle_ref
    return ref() if ref is not None else None
