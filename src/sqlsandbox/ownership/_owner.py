"""Owners: who checked out a connection, and the handle they get back."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from .._exceptions import OwnershipError
from ._lock import OpLock
from ._messages import DOCS_PAGE, caller_name

if TYPE_CHECKING:
    from ._connection import OwnedConnection
    from ._sandbox import Sandbox
    from ._timer import TimerHandle

__all__ = ["Owner", "OwnerState"]

Status = Literal["active", "checked_in", "expired"]

# Tokens: a random part per process and a counter, unique without a call to
# os.urandom on every checkout.
_TOKEN_PREFIX = "sqlsandbox-" + secrets.token_hex(8)
_token_numbers = itertools.count(1)


class OwnerState:
    """Everything the sandbox knows about one checkout (internal)."""

    __slots__ = (
        "__weakref__",
        "_open_lock",
        "aliases",
        "conn",
        "handle_ref",
        "isolation_level",
        "name",
        "sandbox",
        "sandboxed",
        "status",
        "task_ref",
        "thread_ident",
        "timeout",
        "timer",
        "token",
    )

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        name: str,
        sandboxed: bool,
        isolation_level: str | None,
        timeout: float | None,
        thread_ident: int,
        task: asyncio.Task[object] | None,
    ) -> None:
        self.sandbox = sandbox
        self.name = name
        self.token = f"{_TOKEN_PREFIX}{next(_token_numbers):08x}"
        self.sandboxed = sandboxed
        self.isolation_level = isolation_level
        self.timeout = timeout
        self.thread_ident = thread_ident
        self.task_ref = weakref.ref(task) if task is not None else None
        self.status: Status = "active"
        self.conn: OwnedConnection | None = None
        self.timer: TimerHandle | None = None
        #: The handle, held weakly; its callback checks in an owner nobody refers to.
        self.handle_ref: weakref.ref[Owner] | None = None
        self._open_lock: OpLock | None = None
        #: Tokens given to allow() for this owner (a tuple: most owners get none).
        self.aliases: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<owner {self.name!r} {self.status}>"

    @property
    def open_lock(self) -> OpLock:
        """The lock that lets one caller at a time open the owner's connection."""
        lock = self._open_lock
        if lock is None:
            # Made on first use: an eager checkout opens before anyone can see the owner.
            with self.sandbox._lock:
                lock = self._open_lock
                if lock is None:
                    lock = self._open_lock = OpLock()
        return lock

    @property
    def task(self) -> asyncio.Task[object] | None:
        return self.task_ref() if self.task_ref is not None else None

    def expired_error(self) -> OwnershipError:
        return OwnershipError(
            f"Owner {self.name!r} held its connection longer than its ownership timeout "
            f"({self.timeout}s), so the sandbox took it back and closed it; "
            f"{caller_name()} cannot use it any more, and the test's data is gone. If the "
            "test really needs longer, raise the timeout: Sandbox(ownership_timeout=...), "
            "checkout(ownership_timeout=...) or the `ownership_timeout` setting "
            f"(None disables it). See {DOCS_PAGE}#ownership-timeout"
        )

    def stale_error(self) -> OwnershipError:
        if self.status == "expired":
            return self.expired_error()
        return OwnershipError(
            f"{caller_name()} runs in the context of owner {self.name!r}, which has "
            "checked in (its test ended): this code outlived the test that started it. "
            "Await or cancel background tasks and threads before the test ends. "
            f"See {DOCS_PAGE}#owner-ended"
        )


class Owner:
    """The handle of one checkout, returned by ``Sandbox.checkout()``.

    Its :attr:`token` lets code anywhere join the owner's connection (see
    ``Sandbox.allow`` and ``Sandbox.join``). Used as a context manager
    (``with`` / ``async with``) it checks in on exit.

    The owner lives while this handle is referenced, or while the task (or
    thread) that checked out runs. When both are gone (the task finished, the
    thread ended, nobody kept the handle) the sandbox checks it in by itself;
    tasks and threads that inherited the owner then get an error. Keep the
    handle (for example in a fixture) to keep the owner beyond its task.
    """

    __slots__ = ("__weakref__", "_s")

    def __init__(self, state: OwnerState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return f"<Owner {self._s.name!r} {self._s.status}>"

    @property
    def name(self) -> str:
        """What the owner is called in messages (the test id in the pytest plugin)."""
        return self._s.name

    @property
    def token(self) -> str:
        """An opaque string that identifies this owner; pass it to ``allow``/``join``."""
        return self._s.token

    @property
    def sandboxed(self) -> bool:
        """False for ``checkout(sandbox=False)``, whose writes commit."""
        return self._s.sandboxed

    @property
    def status(self) -> Status:
        """``"active"``, ``"checked_in"`` or ``"expired"`` (ownership timeout)."""
        return self._s.status

    @property
    def active(self) -> bool:
        return self._s.status == "active"

    @property
    def sandbox(self) -> Sandbox:
        return self._s.sandbox

    @property
    def connection(self) -> object | None:
        """The driver connection, once opened (None for a lazy checkout not used yet)."""
        conn = self._s.conn
        return conn.adapter.raw if conn is not None and conn.state == "open" else None

    @property
    def kind(self) -> str | None:
        """The kind of connection the owner uses, once opened."""
        conn = self._s.conn
        return conn.kind if conn is not None else None

    def __enter__(self) -> Owner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._s.sandbox.checkin(self)

    async def __aenter__(self) -> Owner:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._s.sandbox.acheckin(self)
