"""The provisioner: templates, clones, the warm pool and cleanup behind one object.

One ``Provisioner`` per process (each pytest-xdist worker, and the controller)
per server. It registers the process as an *owner* in the server's registry,
keeps that registration alive with a heartbeat, and hands out *leases* on
clones. Closing it drops everything it created.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import ProvisioningError
from ..servers._embedded_paths import default_cache_dir
from ..servers._errors import scrub
from ._budget import Budget, BudgetPlan
from ._names import REGISTRY_DATABASE, check_kind, make_name
from ._pool import PoolStats, WarmPool, prepare_clone
from ._reaper import DEFAULT_STALE_AFTER, ReapReport, prune_templates, reap
from ._registry import Owner, Registry
from ._spec import TemplateSpec
from ._strategy import choose_clone_strategy
from ._template import Template, TemplateBuilder

if TYPE_CHECKING:
    from types import TracebackType

    from .._urls import DatabaseURL
    from ..servers._base import Server

__all__ = ["DEFAULT_WARM", "Lease", "Provisioner"]

log = logging.getLogger("sqlsandbox.provision")

#: Clones kept ready per kind unless configured: tests and modules that ask
#: for a fresh database get one at once; a worker's own clone is made on demand.
DEFAULT_WARM: Mapping[str, int] = {"test": 2, "module": 1, "class": 1}


class Lease:
    """A clone handed to a worker, module, class or test until it is released."""

    __slots__ = ("_provisioner", "kind", "name", "released", "template", "url")

    def __init__(
        self,
        provisioner: Provisioner,
        name: str,
        kind: str,
        template: Template,
        url: DatabaseURL,
    ) -> None:
        self._provisioner = provisioner
        self.name = name
        self.kind = kind
        self.template = template
        self.url = url
        self.released = False

    def __repr__(self) -> str:
        state = " released" if self.released else ""
        return f"<Lease {self.kind} {self.name}{state}>"

    def url_for(self, scheme: str) -> DatabaseURL:
        """Return the clone's URL with another scheme, e.g. ``postgresql+asyncpg``."""
        return self.url.with_scheme(scheme)

    def release(self, *, recycle: bool = False) -> None:
        """Give the clone back; idempotent.

        By default it is dropped (and replaced) in the background. With
        *recycle* the caller vouches that the database is unchanged (for
        example every test in it was rolled back) and it goes straight back
        into the warm pool.
        """
        if self.released:
            return
        self.released = True
        self._provisioner._pool.release(self.name, recycle=recycle)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Provisioner:
    """Build templates once, hand out clones fast, and clean up after dead runs.

    *server* is a backend from ``sqlsandbox.servers``. *run_id* ties the
    processes of one run together (pass the same value to every xdist
    worker). *budget* limits databases and connections; *warm* maps a kind to
    how many clones to keep ready (default ``DEFAULT_WARM``); with *adaptive*
    a pool whose test had to wait grows by one, up to *max_warm* and the
    budget; *fill_threads* threads make and drop clones, each on a connection
    of its own (the first shares this object's server), and drop used ones
    up to *drop_batch* at once (PostgreSQL makes each ``DROP DATABASE`` wait
    for a checkpoint; drops that ask together share one). *registry_database*
    names the registry (tests use their own). *on_progress* receives
    one-line messages while templates are built (which migration runs). With
    *isolated_builds* migrations and seed run in a child process, so nothing
    they import or set stays in this one (the pytest plugin builds this way).
    With *choose_strategy* (PostgreSQL 15+, no ``clone_strategy`` set on
    *server*) the first template asked for also picks ``CREATE DATABASE``'s
    strategy: measured once per server and cached in *cache_dir*.
    """

    def __init__(
        self,
        server: Server,
        *,
        run_id: str | None = None,
        budget: Budget | None = None,
        warm: Mapping[str, int] | None = None,
        max_warm: int = 8,
        adaptive: bool = True,
        fill_threads: int = 2,
        drop_batch: int = 4,
        cache_dir: Path | str | None = None,
        on_progress: Callable[[str], None] | None = None,
        lock_timeout: float | None = 600.0,
        acquire_timeout: float | None = 120.0,
        keep_templates: int = 2,
        stale_after: float = DEFAULT_STALE_AFTER,
        heartbeat_interval: float = 30.0,
        registry_database: str = REGISTRY_DATABASE,
        isolated_builds: bool = False,
        choose_strategy: bool = True,
    ) -> None:
        self.server = server
        self.budget = budget or Budget()
        self.warm = dict(DEFAULT_WARM if warm is None else warm)
        for kind in self.warm:
            check_kind(kind)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.adaptive = adaptive
        self.acquire_timeout = acquire_timeout
        self.stale_after = stale_after
        self._on_progress = on_progress
        self.owner = Owner.current(run_id)
        self.registry = Registry(server, registry_database).open()
        self.registry.add_owner(self.owner)
        self._builder = TemplateBuilder(
            server,
            self.registry,
            self.owner,
            cache_dir=self.cache_dir,
            report=self._report,
            lock_timeout=lock_timeout,
            keep_templates=keep_templates,
            stale_after=stale_after,
            isolated=isolated_builds,
        )
        self._pool = WarmPool(
            server,
            self.registry,
            self.owner,
            max_databases=self.budget.databases_per_worker(),
            max_warm=max_warm,
            fill_threads=fill_threads,
            drop_batch=drop_batch,
        )
        self._templates: dict[TemplateSpec, Template] = {}
        self._default: Template | None = None
        self._template_lock = threading.Lock()
        self._strategy_chosen = not choose_strategy
        self._closed = False
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        # Set after every heartbeat: lets tests observe the thread without sleeping.
        self._beaten = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat,
            args=(heartbeat_interval,),
            name="sqlsandbox-heartbeat",
            daemon=True,
        )
        self._heartbeat.start()

    def __repr__(self) -> str:
        return f"<Provisioner {self.server.url.masked()} run={self.owner.run_id}>"

    def __enter__(self) -> Provisioner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def run_id(self) -> str:
        """Return the id of the run this process belongs to."""
        return self.owner.run_id

    def _report(self, message: str) -> None:
        log.info("sqlsandbox: %s", message)
        if self._on_progress is not None:
            self._on_progress(message)

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.registry.heartbeat(self.owner.owner_id)
                self._beaten.set()
            except Exception as exc:
                log.warning("sqlsandbox: heartbeat failed: %s", exc)

    def _check_open(self) -> None:
        if self._closed:
            raise ProvisioningError(f"{self!r} is closed; create a new Provisioner.")

    # -- budget, templates ------------------------------------------------------

    def check_budget(self, *, in_use: int | None = None) -> BudgetPlan:
        """Check the budget against the server; raise ProvisioningError saying what to change."""
        return self.budget.check(self.server, in_use=in_use)

    def template(self, spec: TemplateSpec | None = None) -> Template:
        """Return the complete template of *spec*, building it at most once per fingerprint.

        The first template asked for becomes the default of ``acquire``.
        Within one process the answer is remembered; across processes and
        machines, locks and the registry make sure only one builds it.
        """
        self._check_open()
        spec = spec if spec is not None else TemplateSpec()
        with self._template_lock:
            template = self._templates.get(spec)
            if template is None:
                template = self._builder.ensure(spec)
                self._templates[spec] = template
            if self._default is None:
                self._default = template
            if not self._strategy_chosen:
                self._strategy_chosen = True
                self._choose_clone_strategy(template)
            return template

    def _choose_clone_strategy(self, template: Template) -> None:
        """Clone with the strategy measured fastest on this server (see ``_strategy``)."""

        def probe() -> Callable[[], None]:
            lease = self.clone("probe", template=template)
            return lease.release

        choose_clone_strategy(self.server, self.cache_dir, probe)

    def _resolve(self, template: Template | TemplateSpec | None) -> Template:
        if isinstance(template, TemplateSpec):
            return self.template(template)
        if template is not None:
            return template
        if self._default is None:
            raise ProvisioningError(
                "No template yet: call Provisioner.template(spec) before acquiring clones."
            )
        return self._default

    # -- clones -------------------------------------------------------------------

    def acquire(
        self,
        kind: str = "test",
        *,
        template: Template | TemplateSpec | None = None,
        timeout: float | None = None,
    ) -> Lease:
        """Lease a clone of *template* (default: the first template) for *kind*.

        Comes from the warm pool: immediate when a clone is ready, otherwise
        waits for the one being made (at most *timeout*, default
        ``acquire_timeout``). *kind* is any short lower-case word; it appears
        in the database name (``worker``, ``module``, ``class``, ``test``).
        """
        self._check_open()
        check_kind(kind)
        resolved = self._resolve(template)
        target = self.warm.get(kind, 0)
        name = self._pool.acquire(
            resolved,
            kind,
            timeout=self.acquire_timeout if timeout is None else timeout,
            default_target=target,
            grows=self.adaptive and target > 0,
        )
        return Lease(self, name, kind, resolved, self.server.database_url(name))

    def clone(
        self, kind: str = "test", *, template: Template | TemplateSpec | None = None
    ) -> Lease:
        """Lease a clone made right now in this thread, bypassing the warm pool.

        A spare an earlier run left (see :meth:`keep_spare`) is taken instead
        when there is one: as fresh as a new clone, and no wait for the server.
        """
        self._check_open()
        check_kind(kind)
        resolved = self._resolve(template)
        spare = self.registry.claim_spare(resolved.fingerprint.value, kind, self.owner.owner_id)
        if spare is not None:
            if self.server.database_exists(spare):
                self._pool.adopt(spare, resolved, kind)
                return Lease(self, spare, kind, resolved, self.server.database_url(spare))
            self.registry.remove_database(spare)  # dropped by hand since: forget it
        name = make_name(resolved.fingerprint.value, kind)
        self.registry.add_database(
            name,
            fingerprint=resolved.fingerprint.value,
            kind=kind,
            state="clone",
            owner_id=self.owner.owner_id,
        )
        try:
            self.server.clone_database(name, resolved.name)
            prepare_clone(self.server, name)
        except BaseException:
            with contextlib.suppress(Exception):
                self.registry.remove_database(name)
            raise
        self._pool.adopt(name, resolved, kind)
        return Lease(self, name, kind, resolved, self.server.database_url(name))

    def keep_spare(
        self, kind: str, *, template: Template | TemplateSpec | None = None, limit: int = 1
    ) -> None:
        """Make a clone for *kind* in the background and leave it for the next run's ``clone``.

        The warm pool makes it when it has nothing else to do; ``close``
        registers it as a spare (no owner) instead of dropping it, unless
        *limit* spares of the template for *kind* already wait. Spares go
        with their template (``prune_templates``).
        """
        self._check_open()
        check_kind(kind)
        self._pool.keep_spare(self._resolve(template), kind, limit=max(1, limit))

    def prewarm(
        self, kind: str, count: int, *, template: Template | TemplateSpec | None = None
    ) -> None:
        """Keep *count* clones of *template* for *kind* ready from now on (0 stops)."""
        self._check_open()
        check_kind(kind)
        self.warm[kind] = count
        self._pool.configure(
            self._resolve(template), kind, target=count, grows=self.adaptive and count > 0
        )

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Block until every pool is filled and no drop is pending; False on timeout.

        Tests never need this (acquire waits by itself); tools and benchmarks do.
        """
        return self._pool.wait_idle(timeout)

    def stats(self) -> list[PoolStats]:
        """Return the counters of every warm pool of this process."""
        return self._pool.stats()

    # -- cleanup ----------------------------------------------------------------------

    def reap(self, *, dry_run: bool = False) -> ReapReport:
        """Drop the databases of dead runs on this server (never a live run's, never a user's)."""
        report = reap(self.server, self.registry, stale_after=self.stale_after, dry_run=dry_run)
        if report.dropped:
            self._report(f"dropped {len(report.dropped)} database(s) left by dead runs")
        return report

    def reap_later(self) -> None:
        """Reap (see :meth:`reap`) in a background thread; ``close`` waits for it.

        What crashed runs left behind is no reason to make this run wait: the
        drops take 10-30 ms each, and nothing of this run depends on them.
        """
        self._check_open()

        def run() -> None:
            try:
                self.reap()
            except Exception as exc:
                log.warning(
                    "sqlsandbox: reaping dead runs failed: %s", scrub(str(exc), self.server.url)
                )

        thread = threading.Thread(target=run, name="sqlsandbox-reap", daemon=True)
        self._reaper = thread
        thread.start()

    def prune_templates(self, *, keep: int = 0, dry_run: bool = False) -> ReapReport:
        """Drop complete templates no live run uses, keeping the *keep* newest per project."""
        return prune_templates(
            self.server,
            self.registry,
            cache_dir=self.cache_dir,
            keep=keep,
            exclude=[t.fingerprint.value for t in self._templates.values()],
            stale_after=self.stale_after,
            dry_run=dry_run,
        )

    def close(self, *, reap: bool = True) -> None:
        """Drop every clone this process made, unregister it, and (with *reap*) reap dead runs."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        started = time.perf_counter()
        if self._reaper is not None:
            self._reaper.join()
        try:
            self._pool.close()
            for row in self.registry.databases(owner_id=self.owner.owner_id):
                # Clones made by clone() that were leased and never released.
                with contextlib.suppress(Exception):
                    self.server.drop_database(row.name, missing_ok=True)
                    self.registry.remove_database(row.name)
            self.registry.remove_owner(self.owner.owner_id)
            if reap:
                self.reap()
        finally:
            self._heartbeat.join()
            self.registry.close()
        log.debug("sqlsandbox: provisioner closed in %.3fs", time.perf_counter() - started)
