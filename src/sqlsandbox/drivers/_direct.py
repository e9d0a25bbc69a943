"""What the direct-driver routes share: routes, patches, ownership checks.

``sqlsandbox.asyncpg``, ``sqlsandbox.psycopg`` and ``sqlsandbox.sqlite``
route an app's own use of a driver (``asyncpg.connect()``,
``psycopg.connect()``, ``sqlite3.connect()``...) through a sandbox. Each
``install(sandbox, database=...)`` adds a :class:`Route`; the driver's entry
points are patched when the first route of that driver is added and restored
when the last one is removed. A patched entry point looks up the database the
app asks for: a routed one gets a proxy of the calling code's owner
connection, anything else the driver's own connection, untouched.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Generator
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from .._exceptions import DOCS, ConfigError, OwnershipError
from ..ownership import caller_name, transaction_control

if TYPE_CHECKING:
    from ..ownership import Lease, Owner, Sandbox

__all__ = [
    "DRIVERS_PAGE",
    "CursorProxy",
    "Opening",
    "OwnerCheck",
    "Proxy",
    "Ready",
    "Route",
    "Routes",
    "control_verb",
    "internal_caller",
    "memoized",
]

DRIVERS_PAGE = f"{DOCS}/drivers/"

#: Callers whose connects are never routed: SQLAlchemy's dialects (routed by
#: ``sqlsandbox.sqlalchemy`` instead), sqlsandbox itself, and the drivers'
#: own internals (aiosqlite calls ``sqlite3.connect`` in its thread).
_INTERNAL = ("sqlalchemy.", "sqlsandbox.", "aiosqlite.", "asyncpg.", "psycopg.", "psycopg_pool.")


_MISS: Any = object()


def memoized(fn: Callable[[str], Any], size: int = 4096) -> Callable[[str], Any]:
    """Cache a classifier of SQL text: apps run the same few statements again and again."""
    cache: dict[str, Any] = {}

    def classify(sql: str) -> Any:
        found = cache.get(sql, _MISS)
        if found is _MISS:
            found = fn(sql)
            if len(cache) >= size:
                cache.clear()
            cache[sql] = found
        return found

    return classify


#: ``transaction_control`` with a cache (a regex match costs more than the lookup).
control_verb: Callable[[str], str | None] = memoized(transaction_control)


def internal_caller(frame: FrameType | None) -> bool:
    """Return whether *frame* belongs to a library whose connects must pass through."""
    if frame is None:
        return False
    name = frame.f_globals.get("__name__", "")
    return isinstance(name, str) and name.startswith(_INTERNAL)


class Opening:
    """What asyncio drivers' ``connect()``, ``acquire()``, ``cursor()``... return.

    Awaitable, or an async context manager that ends with ``leave(obj, failed)``
    (close the connection, release it, close the cursor).
    """

    __slots__ = ("_leave", "_obj", "_opening")

    def __init__(
        self, opening: Awaitable[Any], leave: Callable[[Any, bool], Awaitable[None]]
    ) -> None:
        self._opening = opening
        self._leave = leave
        self._obj: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._opening.__await__()

    async def __aenter__(self) -> Any:
        self._obj = await self._opening
        return self._obj

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        obj, self._obj = self._obj, None
        await self._leave(obj, exc_type is not None)


class CursorProxy:
    """A real cursor of the owner's connection as the app sees it.

    Statements (and, for ``server_side`` cursors, fetches) go through the
    connection proxy ``_conn``; anything else is the real cursor's.
    """

    __slots__ = ("_conn", "_cursor", "_server_side")

    def __init__(self, conn: Any, cursor: Any, *, server_side: bool = False) -> None:
        # Past __setattr__: some subclasses pass attribute writes on to the real cursor.
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_cursor", cursor)
        object.__setattr__(self, "_server_side", server_side)

    @property
    def connection(self) -> Any:
        """The connection proxy the app opened this cursor on."""
        return self._conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class Ready:
    """An awaitable whose result is there already (no coroutine to forget to await)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        yield from ()
        return self.value


class Route:
    """One database routed through one sandbox."""

    __slots__ = ("connectors", "database", "sandbox", "statement_savepoints")

    def __init__(self, sandbox: Sandbox, database: str, *, statement_savepoints: bool) -> None:
        self.sandbox = sandbox
        self.database = database
        self.statement_savepoints = statement_savepoints
        #: What the route added to the sandbox, so that an eager checkout opens a
        #: connection of this driver (given back when the route is removed).
        self.connectors: list[Any] = []

    def __repr__(self) -> str:
        return f"<Route {self.database!r} -> {self.sandbox.name}>"


class _Patch:
    __slots__ = ("had", "name", "new", "old", "target")

    def __init__(self, target: Any, name: str, new: Any) -> None:
        self.target = target
        self.name = name
        self.had = name in vars(target)
        self.old = vars(target).get(name)
        self.new = new

    def restore(self) -> None:
        # Only undo what is still ours: someone may have patched on top since.
        if vars(self.target).get(self.name) is not self.new:
            return
        if self.had:
            setattr(self.target, self.name, self.old)
        else:
            delattr(self.target, self.name)


class Routes:
    """The routes of one driver, and the patches that serve them while any exists."""

    def __init__(self, driver: str, apply: Callable[[Routes], None]) -> None:
        self.driver = driver
        self._apply = apply
        self._lock = threading.Lock()
        #: Replaced, never mutated, so lookups need no lock.
        self.routes: tuple[Route, ...] = ()
        self._patches: list[_Patch] = []
        self._cleanups: list[Callable[[], None]] = []

    def find(self, database: str | None) -> Route | None:
        """Return the route serving *database*, or None to pass through."""
        if database is None:
            return None
        for route in self.routes:
            if route.database == database:
                return route
        return None

    def add(self, route: Route, defaults: Callable[[], list[Any]] | None = None) -> None:
        """Add *route*; *defaults* makes the connectors of the sandbox's first route of this driver.

        ``acheckout()`` takes the first connector of a sandbox, ``checkout()``
        the first blocking one: an eager checkout then opens a connection of
        this driver.
        """
        with self._lock:
            old = next((r for r in self.routes if r.sandbox is route.sandbox), None)
            for other in self.routes:
                if other.database == route.database and other.sandbox is not route.sandbox:
                    raise ConfigError(
                        f"{self.driver} connections to {route.database!r} are already routed "
                        f"through sandbox {other.sandbox.name}; uninstall it first "
                        f"(sqlsandbox.{self.driver}.uninstall(sandbox))."
                    )
            routes = [r for r in self.routes if r.sandbox is not route.sandbox]
            first = not self.routes
            self.routes = (*routes, route)
            if first:
                try:
                    self._apply(self)
                except BaseException:
                    self._restore()
                    self.routes = ()
                    raise
            if old is not None:
                route.connectors = old.connectors
            elif defaults is not None:
                route.connectors = defaults()
                for connector in route.connectors:
                    route.sandbox.add_connector(connector)

    def remove(self, sandbox: Sandbox | None) -> list[Route]:
        """Remove the routes of *sandbox* (all if None); the last one restores the patches."""
        gone = self._remove(sandbox)
        for route in gone:
            for connector in route.connectors:
                route.sandbox.remove_connector(connector)
        return gone

    def _remove(self, sandbox: Sandbox | None) -> list[Route]:
        with self._lock:
            gone = [r for r in self.routes if sandbox is None or r.sandbox is sandbox]
            self.routes = tuple(r for r in self.routes if r not in gone)
            if not self.routes:
                self._restore()
            return gone

    def installed(self, sandbox: Sandbox | None = None) -> bool:
        return any(sandbox is None or r.sandbox is sandbox for r in self.routes)

    # -- patches (called by the driver's apply function) --------------------------

    def patch(self, target: Any, name: str, new: Any) -> None:
        """Set ``target.name = new`` until the last route is removed."""
        self._patches.append(_Patch(target, name, new))
        setattr(target, name, new)

    def patch_references(self, original: Any, new: Any, *, skip: tuple[str, ...]) -> None:
        """Replace *original* in every loaded module that imported it by name.

        Apps often write ``from asyncpg import create_pool`` before the
        sandbox is installed; like freezegun does for ``datetime``, their
        module-level name is pointed at the patched function too. Modules
        whose name starts with one of *skip* (the driver's own) are left alone.
        """
        skip = (*skip, "sqlsandbox", "sqlalchemy")
        for name, module in list(sys.modules.items()):
            if not isinstance(module, ModuleType) or name.startswith(skip):
                continue
            try:
                namespace = vars(module)
            except TypeError:
                continue
            for attr, value in list(namespace.items()):
                if value is original:
                    self.patch(module, attr, new)

    def on_restore(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def _restore(self) -> None:
        patches, self._patches = self._patches, []
        for patch in reversed(patches):
            patch.restore()
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in cleanups:
            cleanup()


def require_database(sandbox: Sandbox, database: str | None, driver: str) -> str:
    """Return the database name to route: *database*, else the sandbox URL's."""
    if database:
        return database
    if sandbox.url is not None and sandbox.url.database:
        return sandbox.url.database
    raise ConfigError(
        f"sqlsandbox.{driver}.install() needs to know which database to route: pass "
        f"database=... or create the sandbox with its URL (Sandbox(url))."
    )


class OwnerCheck:
    """Who a proxy belongs to, checked cheaply on every call.

    A proxy serves the owner whose code opened it (or acquired it from a
    pool). Code running as that owner (itself, its tasks, allowed threads,
    shared mode) may use it; anyone else gets an OwnershipError.
    """

    __slots__ = ("kind", "owner_ref", "sandbox")

    def __init__(self, sandbox: Sandbox, kind: str) -> None:
        self.sandbox = sandbox
        self.kind = kind
        owner = sandbox.current_owner()
        self.owner_ref: Callable[[], Owner | None] = (
            weakref.ref(owner) if owner is not None else _none
        )

    def ok(self) -> bool:
        owner = self.owner_ref()
        return owner is not None and self.sandbox.current_owner() is owner

    def error(self, lease: Lease) -> OwnershipError:
        """Explain why the calling code may not use this owner's proxy.

        Proxies call it when the caller runs as another owner, or as nobody
        in a mode that allows it; a caller the sandbox refuses altogether
        (manual mode, ended owner) gets the sandbox's own error first.
        """
        current = self.sandbox.current_owner()
        if current is None:
            who = "runs outside the sandbox (sandbox.unboxed(), or auto mode without an owner)"
        else:
            who = f"runs as owner {current.name!r}"
        owner = lease.owner_name
        return OwnershipError(
            f"{caller_name()} used a {self.kind} connection of owner {owner!r} "
            f"(sandbox {self.sandbox.name}), but it {who}. A connection belongs to the "
            "owner whose code opened or acquired it. Open or acquire a connection in this "
            "code instead (it gets its own owner's connection), or let it use the owner's: "
            "sandbox.allow(owner, <this task or thread>), or `with sandbox.join(owner.token):`. "
            f"See {DRIVERS_PAGE}#what-every-driver-does-the-same-way"
        )


def _none() -> None:
    return None


class Proxy:
    """An owner's connection as one ``connect()`` of the app sees it, for every direct driver.

    Holds the state the proxies share and refuses callers that may not use it.
    Subclasses add ``_closed_error()``: the driver's own error for a closed connection.
    """

    __slots__ = ("__weakref__", "_check", "_closed", "_connector", "_lease", "_raw", "_route")

    def __init__(self, lease: Lease, route: Route, connector: Any, kind: str) -> None:
        self._lease = lease
        #: The owner's driver connection.
        self._raw: Any = lease.raw
        self._route = route
        #: Opens the owner's connection when the calling code's owner has none yet.
        self._connector = connector
        self._check = OwnerCheck(route.sandbox, kind)
        self._closed = False

    def __repr__(self) -> str:
        return f"<sqlsandbox {self._check.kind} connection of owner {self._lease.owner_name!r}>"

    def __getattr__(self, name: str) -> Any:
        """Anything the proxy does not keep for itself is the real connection's."""
        return getattr(self._raw, name)

    def _closed_error(self) -> Exception:
        raise NotImplementedError

    def _denied(self) -> NoReturn:
        """Raise why the calling code may not use this proxy (blocking)."""
        if self._closed:
            raise self._closed_error()
        sandbox = self._route.sandbox
        if sandbox.current_owner() is None:
            sandbox.lease(self._connector)  # raises the sandbox's own error
        raise self._check.error(self._lease)

    async def _adenied(self) -> NoReturn:
        """Raise why the calling code may not use this proxy (asyncio)."""
        if self._closed:
            raise self._closed_error()
        sandbox = self._route.sandbox
        if sandbox.current_owner() is None:
            await sandbox.alease(self._connector)  # raises the sandbox's own error
        raise self._check.error(self._lease)
