"""The warm pool: clones made ahead of time, so handing one out costs no wait.

One pool per (template, kind). Background threads ("fillers") do every slow
thing: clone, register, drop. The caller's side only moves names between
deques under a lock, which is why an acquire from a filled pool takes
microseconds. Waiting (an empty pool, a full budget) is a Condition wait,
never a polling sleep.

Order of work for the fillers: first clones somebody is waiting for, then
refills up to each pool's target, then drops of used clones (they cost
nothing while they wait, except budget; when the budget is full, creating is
impossible and drops run first by construction).

Adapting to demand: when an acquire finds its pool empty, that pool's target
grows by one, up to ``max_warm`` and the database budget. A pool whose kind
has no warm size (``warm[kind] == 0``, for example ``"worker"``) creates on
demand and does not grow.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING

from .._exceptions import ProvisioningError, SandboxError
from ..servers._base import check_owned_name
from ..servers._errors import cause_fix, scrub
from ._names import make_name

if TYPE_CHECKING:
    from ..servers._base import Server
    from ._registry import Owner, Registry
    from ._template import Template

__all__ = ["PoolStats", "WarmPool", "prepare_clone"]

log = logging.getLogger("sqlsandbox.provision")


def prepare_clone(server: Server, name: str) -> None:
    """Give the new clone *name* its settings, before anybody connects to it.

    PostgreSQL: ``synchronous_commit = off`` for every session in the clone, so
    a test's ``COMMIT`` does not wait for the server to flush its WAL to disk
    (1-10 ms each on a server with ``fsync`` on). A clone is thrown away after
    its test or run, so the only thing at stake, the last commits before a
    crash of the server, is never needed. The statement itself commits
    without waiting either. A failure costs speed only: logged, not raised.
    """
    if server.backend != "postgresql":
        return
    try:
        server.execute(
            "BEGIN; SET LOCAL synchronous_commit = off; "
            f'ALTER DATABASE "{check_owned_name(name)}" SET synchronous_commit = off; COMMIT'
        )
    except Exception as exc:
        log.warning(
            "sqlsandbox: setting synchronous_commit in %s failed: %s",
            name,
            scrub(str(exc), server.url),
        )


@dataclasses.dataclass
class PoolStats:
    """Counters of one pool, for reports and the benchmark."""

    template: str
    kind: str
    target: int
    ready: int
    creating: int
    leased: int
    hits: int
    misses: int
    created: int
    dropped: int
    waited_s: float


@dataclasses.dataclass
class _Pool:
    template: Template
    kind: str
    target: int
    grows: bool
    ready: collections.deque[str] = dataclasses.field(default_factory=collections.deque)
    creating: int = 0
    waiters: int = 0
    leased: int = 0
    hits: int = 0
    misses: int = 0
    created: int = 0
    dropped: int = 0
    waited_s: float = 0.0
    error: BaseException | None = None
    #: Clones made for a later run (never handed out here): at close they stay, as spares.
    spare: bool = False


class WarmPool:
    """Ready clones of templates, kept by background threads within a database budget."""

    def __init__(
        self,
        server: Server,
        registry: Registry,
        owner: Owner,
        *,
        max_databases: int,
        max_warm: int,
        fill_threads: int = 1,
        drop_batch: int = 1,
    ) -> None:
        self.server = server
        self.registry = registry
        self.owner = owner
        self.max_databases = max_databases
        self.max_warm = max_warm
        self._cond = threading.Condition()
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._drops: collections.deque[tuple[str, _Pool | None]] = collections.deque()
        self._leased: dict[str, _Pool] = {}
        self._spare_limits: dict[tuple[str, str], int] = {}
        self._dropping = 0
        self._closed = False
        #: The thread that called close(), for the error of a late acquire.
        self._closed_by: str | None = None
        #: Used clones dropped side by side (see _next).
        self.drop_batch = max(1, drop_batch)
        #: Servers for fillers and batched drops: the first is ours, the others connect on
        #: their own (one connection serialises its statements; clones and drops overlap).
        count = max(fill_threads, self.drop_batch, 1)
        self._servers: list[Server | None] = [server] + [None] * (count - 1)
        self._servers_lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._fill, args=(i,), name=f"sqlsandbox-warm-pool-{i}", daemon=True
            )
            for i in range(max(1, fill_threads))
        ]
        for thread in self._threads:
            thread.start()

    # -- caller side --------------------------------------------------------

    def configure(self, template: Template, kind: str, *, target: int, grows: bool) -> None:
        """Set how many clones of *template* for *kind* to keep ready."""
        with self._cond:
            pool = self._pool(template, kind, target=target, grows=grows)
            pool.target = min(target, self.max_warm)
            pool.grows = grows
            self._cond.notify_all()

    def _pool(self, template: Template, kind: str, *, target: int, grows: bool) -> _Pool:
        key = (template.name, kind)
        pool = self._pools.get(key)
        if pool is None:
            pool = _Pool(template, kind, target=min(target, self.max_warm), grows=grows)
            self._pools[key] = pool
        return pool

    def acquire(
        self,
        template: Template,
        kind: str,
        *,
        timeout: float | None,
        default_target: int,
        grows: bool,
    ) -> str:
        """Return the name of a ready clone, waiting for one if the pool is empty."""
        with self._cond:
            self._check_open(template, waiting=False)
            pool = self._pool(template, kind, target=default_target, grows=grows)
            if pool.ready:
                pool.hits += 1
            else:
                pool.misses += 1
                pool.error = None
                if pool.grows and pool.target < self.max_warm:
                    pool.target += 1
                pool.waiters += 1
                self._cond.notify_all()
                started = time.perf_counter()
                deadline = None if timeout is None else time.monotonic() + timeout
                try:
                    while not pool.ready:
                        self._check_open(template, waiting=True)
                        if pool.error is not None:
                            error = pool.error
                            if isinstance(error, SandboxError):
                                raise error
                            raise self._clone_error(template, error) from error
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise ProvisioningError(self._timeout_message(pool, timeout))
                        self._cond.wait(remaining)
                finally:
                    pool.waiters -= 1
                    pool.waited_s += time.perf_counter() - started
            name = pool.ready.popleft()
            pool.leased += 1
            self._leased[name] = pool
            # A filler may now refill this pool.
            self._cond.notify_all()
            return name

    def keep_spare(self, template: Template, kind: str, *, limit: int) -> None:
        """Make a clone of *template* for *kind* for a later run, when there is nothing else to do.

        It is left on the server as a spare when the pool closes (see
        ``Registry.claim_spare``), unless *limit* spares already wait.
        """
        with self._cond:
            key = (template.name, f"{kind}+spare")
            if key not in self._pools:
                self._pools[key] = _Pool(template, kind, target=1, grows=False, spare=True)
                self._spare_limits[key] = limit
                self._cond.notify_all()

    def adopt(self, name: str, template: Template, kind: str) -> None:
        """Count *name* (cloned by the caller) as leased, so release and close handle it."""
        with self._cond:
            pool = self._pool(template, kind, target=0, grows=False)
            pool.leased += 1
            self._leased[name] = pool

    def release(self, name: str, *, recycle: bool) -> None:
        """Take back a leased clone: reuse it as is (*recycle*) or drop it in the background."""
        with self._cond:
            pool = self._leased.pop(name, None)
            if pool is not None:
                pool.leased -= 1
            if recycle and pool is not None and not self._closed:
                pool.ready.appendleft(name)
            else:
                self._drops.append((name, pool))
            self._cond.notify_all()

    def _timeout_message(self, pool: _Pool, timeout: float | None) -> str:
        held = self._count()
        return (
            f"Waited {timeout:g}s for a clone of template {pool.template.name} "
            f"({pool.kind}) on {self.server.url.masked()}: this process holds {held} of its "
            f"{self.max_databases} databases ({len(self._leased)} leased and not released). "
            "Release leases you no longer need, or raise --sqlsandbox-max-databases "
            "(SQLSANDBOX_MAX_DATABASES)."
        )

    def _clone_error(self, template: Template, error: BaseException) -> ProvisioningError:
        """Build the error for a clone the background thread could not make."""
        url = self.server.url
        lines = [line for line in str(error).splitlines() if line.strip()]
        detail = scrub(lines[0] if lines else "", url).strip().rstrip(".")
        detail = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        action = f"clone template {template.name}"
        return ProvisioningError(
            f"Cloning template {template.name} on {url.masked()} failed in the warm pool's "
            f"background thread: {detail}. {cause_fix(detail, url, action=action)} "
            "The next acquire tries again."
        )

    def _check_open(self, template: Template, *, waiting: bool) -> None:
        if self._closed:
            during = (
                f" while this thread waited for a clone of template {template.name}"
                if waiting
                else ""
            )
            raise ProvisioningError(
                f"The warm pool on {self.server.url.masked()} is closed: Provisioner.close() "
                f"was called from thread {self._closed_by!r}{during}. The pytest plugin "
                "closes it when the session ends, and so does leaving a 'with Provisioner(...)' "
                "block: acquire clones before that, and release them; or create a new "
                "Provisioner."
            )

    def stats(self) -> list[PoolStats]:
        """Return the counters of every pool."""
        with self._cond:
            return [
                PoolStats(
                    template=p.template.name,
                    kind=p.kind,
                    target=p.target,
                    ready=len(p.ready),
                    creating=p.creating,
                    leased=p.leased,
                    hits=p.hits,
                    misses=p.misses,
                    created=p.created,
                    dropped=p.dropped,
                    waited_s=p.waited_s,
                )
                for p in self._pools.values()
            ]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every pool holds its target (or failed) and no drop is pending.

        For tools, benchmarks and tests; returns False if *timeout* ran out.
        """

        def idle() -> bool:
            pools = self._pools.values()
            return self._closed or (
                not self._drops
                and self._dropping == 0
                and all(p.creating == 0 for p in pools)
                and all(len(p.ready) >= p.target or p.error is not None for p in pools)
            )

        with self._cond:
            return self._cond.wait_for(idle, timeout)

    # -- filler side ----------------------------------------------------------

    def _count(self) -> int:
        """Databases this process holds or is making (caller holds the lock)."""
        pools = self._pools.values()
        return (
            sum(len(p.ready) + p.creating for p in pools)
            + len(self._leased)
            + len(self._drops)
            + self._dropping
        )

    def _next(self) -> tuple[_Pool | None, list[tuple[str, _Pool | None]]] | None:
        """Pick the next job: a pool to make a clone for, or clones to drop (lock held).

        Used clones are dropped in batches, side by side: PostgreSQL's
        ``DROP DATABASE`` waits for a checkpoint, and drops that ask at once
        share one. A batch goes when it is full, when the budget needs the
        room, or when nothing else is to be done; always before refills
        (a refill is for later, a drop is work left for the end otherwise).
        """
        room = self._count() < self.max_databases
        if room:
            for pool in self._pools.values():
                # Waiters not yet woken by a clone already made count as served.
                if pool.error is None and pool.waiters > pool.creating + len(pool.ready):
                    return (pool, [])
        if self._drops and (len(self._drops) >= self.drop_batch or not room):
            return (None, self._take_drops())
        wanting = [
            pool
            for pool in self._pools.values()
            if pool.error is None and len(pool.ready) + pool.creating < pool.target
        ]
        if room:
            for pool in wanting:
                if not pool.spare:
                    return (pool, [])
        if self._drops:
            return (None, self._take_drops())
        if room and wanting:
            return (wanting[0], [])  # a spare: nothing else is left to do
        return None

    def _take_drops(self) -> list[tuple[str, _Pool | None]]:
        batch: list[tuple[str, _Pool | None]] = []
        while self._drops and len(batch) < self.drop_batch:
            batch.append(self._drops.popleft())
        self._dropping += len(batch)
        return batch

    def _server(self, index: int) -> Server:
        """Return server *index*, connecting a sibling of ours on first use."""
        with self._servers_lock:
            server = self._servers[index]
            if server is None:
                from ..servers import connect_server

                strategy = getattr(self.server, "clone_strategy", None)
                options = {"clone_strategy": strategy} if strategy else {}
                server = connect_server(self.server.url, **options)
                if type(server) is not type(self.server):
                    # A backend of the caller's own (a subclass): only it knows how it clones.
                    server.close()
                    server = self.server
                self._servers[index] = server
            if server is not self.server and hasattr(self.server, "clone_strategy"):
                # Chosen after this sibling connected, maybe (see Provisioner.template).
                server.clone_strategy = self.server.clone_strategy  # type: ignore[attr-defined]
            return server

    def _drop_side_by_side(
        self, batch: list[tuple[str, _Pool | None]], *, first: int = 0
    ) -> list[str]:
        """Drop every clone of *batch* at once, each on a server of its own; return those gone.

        The servers are ``_servers[first:]``, wrapping around.
        """
        dropped: list[str] = []

        def drop(index: int, name: str, pool: _Pool | None) -> None:
            try:
                server = self._server((first + index) % len(self._servers))
            except Exception:
                server = self.server
            if self._drop(name, pool, server):
                dropped.append(name)

        if len(batch) == 1:
            drop(0, *batch[0])
            return dropped
        threads = [
            threading.Thread(
                target=drop, args=(i, name, pool), name=f"sqlsandbox-drop-{i}", daemon=True
            )
            for i, (name, pool) in enumerate(batch)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return dropped

    def _fill(self, index: int) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        # close() drops what is left, after the fillers stopped.
                        return
                    job = self._next()
                    if job is not None:
                        break
                    self._cond.wait()
                pool, batch = job
                if pool is not None:
                    pool.creating += 1
            if pool is None:
                self._drop_side_by_side(batch)
                continue
            try:
                server = self._server(index)
            except Exception:
                server = self.server
            self._create(pool, server)

    def _create(self, pool: _Pool, server: Server) -> None:
        template = pool.template
        name = make_name(template.fingerprint.value, pool.kind)
        error: BaseException | None = None
        if pool.spare and self._enough_spares(pool):
            with self._cond:
                pool.creating -= 1
                pool.target = 0
                self._cond.notify_all()
            return
        try:
            self.registry.add_database(
                name,
                fingerprint=template.fingerprint.value,
                kind=pool.kind,
                state="clone",
                owner_id=self.owner.owner_id,
            )
            try:
                # The backend retries "being accessed by other users" itself,
                # terminating whoever sits on the template.
                server.clone_database(name, template.name)
                prepare_clone(server, name)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.registry.remove_database(name)
                raise
        except BaseException as exc:
            error = exc
            log.warning(
                "sqlsandbox: cloning %s failed: %s", template.name, scrub(str(exc), self.server.url)
            )
        with self._cond:
            pool.creating -= 1
            if error is not None:
                pool.error = error
            elif self._closed and not pool.spare:
                self._drops.append((name, pool))
            else:
                pool.created += 1
                pool.ready.append(name)
            self._cond.notify_all()

    def _enough_spares(self, pool: _Pool) -> bool:
        limit = self._spare_limits.get((pool.template.name, f"{pool.kind}+spare"), 1)
        try:
            return self.registry.spares(pool.template.fingerprint.value, pool.kind) >= limit
        except Exception:
            return True  # a spare is a favour to the next run: never worth a failure

    def _drop(self, name: str, pool: _Pool | None, server: Server) -> bool:
        """Drop *name* (counted in ``_dropping``); return whether it is gone."""
        gone = False
        try:
            server.drop_database(name, missing_ok=True)
            self.registry.remove_database(name)
            gone = True
        except Exception as exc:
            # The row stays, so the reaper retries once this process is gone.
            log.warning(
                "sqlsandbox: dropping %s failed: %s", name, scrub(str(exc), self.server.url)
            )
        with self._cond:
            self._dropping -= 1
            if pool is not None:
                pool.dropped += 1
            self._cond.notify_all()
        return gone

    # -- shutdown ---------------------------------------------------------------

    def close(self) -> list[str]:
        """Stop the fillers and drop every clone this pool made; return the dropped names.

        Spares (see :meth:`keep_spare`) stay, registered for a later run. The
        clones already done with are dropped while the fillers finish what
        they are making, on servers the fillers do not use.
        """
        with self._cond:
            if self._closed:
                return []
            self._closed = True
            self._closed_by = threading.current_thread().name
            self._cond.notify_all()
        dropped: list[str] = []
        fillers = len(self._threads)
        spare_servers = max(1, len(self._servers) - fillers)
        early = threading.Thread(
            target=self._drop_in_batches,
            args=(self._take_unused(), dropped, fillers % len(self._servers), spare_servers),
            name="sqlsandbox-close-drops",
            daemon=True,
        )
        early.start()
        for thread in self._threads:
            thread.join()
        late = self._take_unused()
        with self._cond:
            spares = [name for pool in self._pools.values() if pool.spare for name in pool.ready]
            for pool in self._pools.values():
                pool.ready.clear()
        for name in spares:
            try:
                self.registry.mark_spare(name)
            except Exception:
                late.append((name, None))  # not left for later: dropped with the rest
                with self._cond:
                    self._dropping += 1
        early.join()
        self._drop_in_batches(late, dropped, 0, len(self._servers))
        for sibling in self._servers[1:]:
            if sibling is not None and sibling is not self.server:
                with contextlib.suppress(Exception):
                    sibling.close()
        return dropped

    def _take_unused(self) -> list[tuple[str, _Pool | None]]:
        """Take every clone to drop at close but spares (counted in ``_dropping``)."""
        with self._cond:
            batch = list(self._drops)
            self._drops.clear()
            for pool in self._pools.values():
                if not pool.spare:
                    batch.extend((name, pool) for name in pool.ready)
                    pool.ready.clear()
            batch.extend(self._leased.items())
            self._leased.clear()
            self._dropping += len(batch)
        return batch

    def _drop_in_batches(
        self, batch: list[tuple[str, _Pool | None]], dropped: list[str], first: int, width: int
    ) -> None:
        for start in range(0, len(batch), width):
            dropped += self._drop_side_by_side(batch[start : start + width], first=first)
