"""The database half of the plugin: a clone per worker, a sandbox per test.

One :class:`WorkerDatabase` per pytest process drives the lower layers:
``servers`` (the server), ``provision`` (template, worker clone, clones for
``isolation="database"`` tests), ``ownership`` (one Sandbox over the worker
clone) and the SQLAlchemy driver (routed engines). It holds no database
logic of its own.

When it starts:

- ``url_env`` set: before conftest.py is imported, so apps that build engines
  at import time see this worker's database;
- ``migrate`` or ``engines`` set: when the session starts;
- otherwise: when a test first asks for a database fixture.

Under pytest-xdist the controller only builds the template (once, with
progress in the terminal) and checks the budget; each worker makes its clone.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from .._exceptions import ConfigError, SandboxError
from .._settings import Settings
from .._urls import DatabaseURL
from ._loop_end import LoopEndCheckin
from ._marks import SandboxSpec, clone_for_mark, mark_template, sandbox_spec
from ._options import get_settings
from ._scopes import ScopeData
from ._summary import get_recorder
from ._url_env import UrlEnv, read_dotenv
from ._xdist import is_controller, is_worker, run_uid, worker_count

if TYPE_CHECKING:
    from ..ownership import Owner, Sandbox
    from ..provision import Lease, Provisioner, Template, TemplateSpec
    from ..provision._spec import SetupMode
    from ..servers import Server

__all__ = ["SandboxHandle", "WorkerDatabase", "get_database"]

_DATABASE_KEY = pytest.StashKey["WorkerDatabase"]()
_KEEP_SERVER_ENV = "SQLSANDBOX_KEEP_SERVER"
#: Where ``url_env`` points before this process has a database (never created).
_NOT_READY = "sqlsandbox_database_not_ready_yet"


class SandboxHandle:
    """What the ``sandbox`` fixture gives a test: its database and, if any, its owner.

    ``owner`` is None under ``isolation="database"``: the test has a whole
    clone, reached through plain connections, and no transaction to share.
    """

    def __init__(
        self,
        database: WorkerDatabase,
        spec: SandboxSpec,
        url: DatabaseURL,
        owner: Owner | None,
    ) -> None:
        self._database = database
        self.spec = spec
        self.url = url
        self.owner = owner

    def __repr__(self) -> str:
        return f"<SandboxHandle {self.spec.isolation} {self.url.masked()}>"

    @property
    def isolation(self) -> str:
        """``"transaction"``, ``"database"`` or ``"none"``."""
        return self.spec.isolation

    @property
    def mode(self) -> str:
        """The ownership mode during this test."""
        return self.spec.mode

    @property
    def sandbox(self) -> Sandbox:
        """The worker's Sandbox (allow, join, unboxed, mode)."""
        sandbox = self._database.sandbox
        assert sandbox is not None
        return sandbox

    @property
    def token(self) -> str | None:
        """The owner's opaque token, to join from another thread or an HTTP request."""
        return self.owner.token if self.owner is not None else None

    def allow(self, target: Any) -> None:
        """Let *target* (a task, a thread or a token string) use this test's connection."""
        if self.owner is not None:
            self.sandbox.allow(self.owner, target)

    def engine(self, *, is_async: bool = False) -> Any:
        """Return the engine the session fixtures use: the app's routed one, else sqlsandbox's."""
        return self._database.engine(is_async=is_async)


class WorkerDatabase:
    """This process's server, template, clone, sandbox and routed engines."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.server: Server | None = None
        self.provisioner: Provisioner | None = None
        self.template: Template | None = None
        #: What the run's template is built from; marks' templates start from it.
        self.template_spec: TemplateSpec | None = None
        self.clone: Lease | None = None
        self.sandbox: Sandbox | None = None
        #: Where fixtures of scope session, package, module and class write.
        self.scopes: ScopeData | None = None
        self.url_env = UrlEnv(
            settings.url_env,
            dotenv=read_dotenv(config.rootpath / ".env") if settings.url_env else None,
        )
        #: Engines routed through the sandbox, the app's first, then sqlsandbox's own.
        self.routed: list[Any] = []
        self._own: dict[bool, Any] = {}
        self._imported_engines = False
        #: Modules (``sqlsandbox.asyncpg``...) whose routes ``drivers`` installed.
        self._drivers: list[Any] = []
        #: During an isolation="database" test: its URL, and the engine pools to restore.
        self._test_url: DatabaseURL | None = None
        self._swapped: list[tuple[Any, Any, Any]] = []
        #: Per routed engine, the engine that reaches the test's clone (see _TestEngine).
        self._test_engines: dict[int, _TestEngine] = {}
        self.error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------

    @property
    def url(self) -> DatabaseURL:
        """URL of this worker's clone."""
        if self.clone is None:
            raise SandboxError("sqlsandbox has not made this worker's database yet.")
        return self.clone.url

    def open_template(self, report: Callable[[str], None] | None = None) -> None:
        """Start the server and make sure the template exists (built at most once)."""
        if self.template is not None:
            return
        from ..provision import Budget, Provisioner, TemplateSpec
        from ..servers import open_server

        recorder = get_recorder(self.config)
        settings = self.settings
        if settings.url is None:
            # The embedded server reads this variable when its last user leaves;
            # the setting may come from a flag or pyproject.toml instead.
            os.environ[_KEEP_SERVER_ENV] = "1" if settings.keep_server else "0"
        self.server = open_server(settings.url)
        recorder.record_server(self.server.url, self.server.version())
        if settings.url_env and self.clone is None:
            # Until this process has its database, the app's variables name one
            # that does not exist: fingerprinting imports the migrate target,
            # which may build an engine (or even connect) at import time.
            self.url_env.point(self.server.url.with_database(_NOT_READY))
        warm = None if settings.warm_pool is None else {"test": settings.warm_pool}
        budget = Budget(
            max_databases=settings.max_databases,
            reserve_connections=settings.reserve_connections,
            connections_per_worker=settings.connections_per_worker,
            workers=worker_count(self.config),
        )
        self.provisioner = Provisioner(
            self.server,
            run_id=run_uid(self.config),
            budget=budget,
            warm=warm,
            adaptive=settings.warm_pool is None,
            on_progress=report,
            lock_timeout=settings.lock_timeout,
            registry_database=settings.registry_database,
            # The app's settings, engines and env vars stay as the tests need them.
            isolated_builds=True,
        )
        spec = TemplateSpec(
            migrate=settings.migrate,
            seed=settings.seed,
            setup=None if settings.setup == "auto" else cast("SetupMode", settings.setup),
            root=self.config.rootpath,
            alembic_config=settings.alembic_config,
            fingerprint_extra=settings.fingerprint_extra,
            # Names whose value is the plain URL: migrations (alembic env.py) read them.
            url_env=tuple(n for n, t in settings.url_env.items() if t == "{url}"),
        )
        if not is_worker(self.config):
            # Once per run, before workers start: fail early if -n does not fit,
            # and drop what crashed runs left behind (in the background).
            self.provisioner.check_budget()
            self.provisioner.reap_later()
        self.template_spec = spec
        self.template = self.provisioner.template(spec)
        recorder.record_template(
            self.template.fingerprint.short,
            reused=not self.template.built,
            seconds=self.template.build_s or 0.0,
        )

    def _open_clone(self, kind: str, report: Callable[[str], None] | None) -> None:
        """Open the template and make this process's clone, meanwhile importing what it needs.

        Making the clone is waiting for the server (``CREATE DATABASE``), so it
        runs in a thread while this one imports the modules the run needs anyway.
        Opening the template comes first, alone: fingerprinting imports the
        project's migrations and models, and two threads importing modules that
        import each other (SQLAlchemy's do) can hand one of them a partly
        initialised module, an ImportError that is no missing package. Imports
        hold the GIL anyway: only the waiting overlaps. It all ends before this
        returns: the app, imported next, may connect at import time.
        """
        errors: list[BaseException] = []
        opened = threading.Event()

        def run() -> None:
            try:
                try:
                    self.open_template(report)
                finally:
                    opened.set()
                assert self.provisioner is not None
                self.clone = self.provisioner.clone(kind)
                if kind == "worker" and self.settings.isolation == "database":
                    # Most tests will want a clone of their own: start making them now,
                    # while the app is imported and the tests collected.
                    self.provisioner.prewarm("test", self.warm_target())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name="sqlsandbox-open", daemon=True)
        thread.start()
        try:
            opened.wait()
            if not errors:
                self._import_ahead()
        finally:
            thread.join()
        if errors:
            raise errors[0]

    def warm_target(self) -> int:
        """Return how many clones to keep ready for isolation='database' tests."""
        from ..provision import DEFAULT_WARM

        target = self.settings.warm_pool
        return DEFAULT_WARM.get("test", 0) if target is None else target

    def _import_ahead(self) -> None:
        """Import the modules the configured routes need (a missing extra fails later, clearly)."""
        names = ["sqlsandbox.sqlalchemy"] if self.settings.engines else []
        names += [f"sqlsandbox.{name}" for name in self.settings.drivers]
        for name in names:
            # Not only ImportError: sqlsandbox.sqlalchemy turns a missing package into a
            # ConfigError. Whatever failed is imported again where it is used, and fails
            # there with its own message.
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    def open(self, report: Callable[[str], None] | None = None) -> None:
        """Make this worker's clone and its sandbox, and point ``url_env`` at it."""
        if self.sandbox is not None:
            return
        from ..ownership import Sandbox

        if self.clone is None:
            self._open_clone("worker", report)
        assert self.clone is not None
        get_recorder(self.config).record_clone()
        self.sandbox = Sandbox(
            self.clone.url,
            name=f"{self.clone.name} ({self.clone.url.masked()})",
            ownership_timeout=self.settings.ownership_timeout,
            reset_sequences=self.settings.reset_sequences,
        )
        self.scopes = ScopeData(self.sandbox, lambda: self.routed)
        if self.settings.url_env:
            self.url_env.point(self.clone.url)

    def open_controller(self, report: Callable[[str], None] | None = None) -> None:
        """Point ``url_env`` of the xdist controller at a clone of its own.

        The controller imports conftest.py (and so the app) but runs no test;
        an app that connects at import time must not reach the user's own
        database from there, nor write into the template.
        """
        if self.clone is not None:
            return
        self._open_clone("controller", report)
        assert self.clone is not None
        self.url_env.point(self.clone.url)

    def point_nowhere(self) -> None:
        """Point ``url_env`` at a database that does not exist, without starting any server."""
        url = self.settings.url
        base = DatabaseURL.parse(url) if url else DatabaseURL.parse("postgresql://localhost/")
        if base.backend == "sqlite":
            # A file in a folder that does not exist: SQLite refuses it rather than create it.
            self.url_env.point(base.with_database(os.path.join(os.sep, _NOT_READY, "db.sqlite")))
        else:
            self.url_env.point(base.with_database(_NOT_READY))

    def ensure_open(self) -> WorkerDatabase:
        """Open on first use; re-raise a failure of an earlier attempt."""
        if self.error is not None:
            raise self.error
        try:
            self.open()
            self.route_configured_engines()
            self.install_configured_drivers()
        except BaseException as exc:
            self.error = exc
            raise
        return self

    def route_configured_engines(self) -> None:
        """Import the engines named in ``engines`` and route them through the sandbox."""
        if self._imported_engines or not self.settings.engines:
            return
        from ..sqlalchemy import import_engine

        self._imported_engines = True
        for spec in self.settings.engines:
            self.route(import_engine(spec))

    def install_configured_drivers(self) -> None:
        """Route the app's direct driver calls named in ``drivers`` through the sandbox.

        The routes serve the worker's clone only (they match its database
        name): under ``isolation="database"`` the app's connections to the
        test's own clone pass through untouched, as plain connections.
        """
        if self._drivers or not self.settings.drivers:
            return
        assert self.sandbox is not None and self.server is not None
        backend = self.url.backend
        for name in self.settings.drivers:
            wanted = {"sqlite": "sqlite", "mysql": "mysql"}.get(name, "postgresql")
            if backend.replace("mariadb", "mysql") != wanted:
                origin = self.settings.origin
                raise ConfigError(
                    f"Setting 'drivers' names {name!r}, which needs a {wanted} server, but "
                    f"sqlsandbox's server is {self.server.url.masked()} ({origin('url')}). "
                    f"Remove {name!r} from 'drivers' ({origin('drivers')}) or "
                    "point --sqlsandbox-url / SQLSANDBOX_URL at a matching server."
                )
            module = importlib.import_module(f"sqlsandbox.{name}")
            module.install(self.sandbox)
            self._drivers.append(module)

    def route(self, engine: Any) -> None:
        """Route *engine* (Engine or AsyncEngine) through this worker's sandbox."""
        from ..sqlalchemy import install

        assert self.sandbox is not None and self.scopes is not None
        install(engine, self.sandbox)
        self.scopes.tracker.install()
        if not any(e is engine for e in self.routed):
            self.routed.append(engine)
            if self._test_url is not None:
                self._swapped.append(self._point_engine(engine, self._test_url))

    def engine(self, *, is_async: bool) -> Any:
        """Return the first routed engine of that kind, creating sqlsandbox's own if none."""
        for engine in self.routed:
            if hasattr(engine, "sync_engine") == is_async:
                return engine
        own = self._own.get(is_async)
        if own is None:
            own = self._own[is_async] = self._create_engine(is_async=is_async)
            self.route(own)
        return own

    def _create_engine(self, *, is_async: bool) -> Any:
        from ..provision._sources import async_scheme, sync_scheme

        url = self.url
        scheme = async_scheme(url.backend) if is_async else sync_scheme(url.backend)
        if is_async:
            from sqlalchemy.ext.asyncio import create_async_engine

            return create_async_engine(url.with_scheme(scheme).render())
        from sqlalchemy import create_engine

        return create_engine(url.with_scheme(scheme).render())

    def close(self) -> None:
        """Give everything back: engines, sandbox, clones, server; restore ``url_env``."""
        from ..sqlalchemy import uninstall

        self.url_env.restore()
        if self.scopes is not None:
            self.scopes.close()
            self.scopes = None
        for engine in self.routed:
            with contextlib.suppress(Exception):
                uninstall(engine)
        for engine in self._own.values():
            with contextlib.suppress(Exception):
                getattr(engine, "sync_engine", engine).dispose()
        test_engines, self._test_engines = self._test_engines, {}
        for test_engine in test_engines.values():
            with contextlib.suppress(Exception):
                test_engine.temporary.dispose()
        self.routed.clear()
        self._own.clear()
        drivers, self._drivers = self._drivers, []
        for module in drivers:
            with contextlib.suppress(Exception):
                module.uninstall(self.sandbox)
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None
        if self.clone is not None:
            self.clone.release()
            self.clone = None
        if self.provisioner is not None:
            self.provisioner.close()
            self.provisioner = None
        if self.server is not None:
            self.server.close()
            self.server = None
        self.template = None

    def _point_engine(self, engine: Any, url: DatabaseURL) -> tuple[Any, Any, Any]:
        """Give *engine* a pool of plain connections to *url*; return what to undo."""
        sync_engine = getattr(engine, "sync_engine", engine)
        test_engine = self._test_engines.get(id(sync_engine))
        if test_engine is None or test_engine.routed is not sync_engine:
            test_engine = self._test_engines[id(sync_engine)] = _TestEngine(engine, url)
        return test_engine.point(url)

    # -- per test -----------------------------------------------------------------

    @contextlib.contextmanager
    def test(self, name: str, spec: SandboxSpec) -> Iterator[SandboxHandle]:
        """Isolate one test as *spec* says, for the duration of the block."""
        if spec.isolation == "database":
            with self._own_database(spec, name) as handle:
                yield handle
            return
        sandbox, scopes = self.sandbox, self.scopes
        assert sandbox is not None and scopes is not None
        nested = scopes.nested_owner() if spec.isolation == "transaction" else None
        if nested is not None:
            # Data of a module, class or package scope: the test runs inside it.
            with scopes.tracker.collect() as begun, scopes.nested_test(nested):
                try:
                    with _mode(sandbox, spec, nested):
                        yield SandboxHandle(self, spec, self.url, nested)
                finally:
                    scopes.end_test_sessions(begun)
            get_recorder(self.config).record_test(spec.isolation)
            return
        owner = sandbox.checkout(lazy=True, sandbox=spec.isolation == "transaction", name=name)
        early = LoopEndCheckin(sandbox, owner)
        try:
            with early.listening(), scopes.tracker.collect() as begun:
                try:
                    with _mode(sandbox, spec, owner):
                        yield SandboxHandle(self, spec, self.url, owner)
                finally:
                    scopes.end_test_sessions(begun)
        finally:
            used = owner.kind is not None or early.used
            sandbox.checkin(owner)
            early.check()
            if used:
                get_recorder(self.config).record_test(spec.isolation)

    @contextlib.contextmanager
    def _own_database(self, spec: SandboxSpec, name: str) -> Iterator[SandboxHandle]:
        """Give the test a fresh clone: env vars and routed engines point at it meanwhile."""
        assert self.provisioner is not None and self.template_spec is not None
        recorder = get_recorder(self.config)
        marked = mark_template(spec, self.template_spec)
        if marked is not None:
            # Another template (built once per fingerprint): cloned now, not kept warm.
            lease = clone_for_mark(self.config, self.provisioner, marked, name, spec)
        else:
            started = time.perf_counter()
            misses = sum(s.misses for s in self.provisioner.stats())
            lease = self.provisioner.acquire("test")
            waited = sum(s.misses for s in self.provisioner.stats()) > misses
            recorder.record_warm_acquire(time.perf_counter() - started if waited else 0.0)
        recorder.record_clone()
        try:
            # sqlsandbox's own engines are routed too (also those made during the
            # test, see route()), so this covers the session fixtures.
            self._test_url = lease.url
            self._swapped = [self._point_engine(engine, lease.url) for engine in self.routed]
            if self.settings.url_env:
                self.url_env.point(lease.url)
            assert self.scopes is not None
            with self.scopes.tracker.collect() as begun:
                try:
                    yield SandboxHandle(self, spec, lease.url, None)
                finally:
                    # Before the pools go back: their connections reach this clone.
                    self.scopes.end_test_sessions(begun)
        finally:
            self._test_url = None
            swapped, self._swapped = self._swapped, []
            for sync_engine, original_pool, temporary in swapped:
                sync_engine.pool = original_pool
                with contextlib.suppress(Exception):
                    temporary.dispose()
            if self.settings.url_env and self.clone is not None:
                self.url_env.point(self.clone.url)
            lease.release()
            recorder.record_test("database")


@contextlib.contextmanager
def _mode(sandbox: Sandbox, spec: SandboxSpec, owner: Owner) -> Iterator[None]:
    """Put the sandbox in the test's mode for the block; manual again afterwards."""
    if spec.mode == "shared":
        sandbox.mode("shared", owner)
    elif spec.mode == "auto":
        sandbox.mode("auto")
    try:
        yield
    finally:
        if spec.mode != "manual":
            sandbox.mode("manual")


class _TestEngine:
    """The engine that reaches each isolation="database" test's clone for one routed engine.

    Made once per routed engine, not once per test: a new engine would run
    its dialect's first-connect queries (server version, schema, encoding:
    about 6 ms on PostgreSQL) again on every test. Its ``do_connect`` hook
    gives each connection the arguments of the current test's clone; between
    tests its pool is disposed, so no connection outlives its clone.
    """

    def __init__(self, engine: Any, url: DatabaseURL) -> None:
        from sqlalchemy import event

        self.routed = getattr(engine, "sync_engine", engine)
        target = self.routed.url.set(database=url.database)
        if hasattr(engine, "sync_engine"):
            from sqlalchemy.ext.asyncio import create_async_engine
            from sqlalchemy.pool import NullPool

            from ..drivers._sqlalchemy import close_at_loop_end

            # No pooling: connections close in the test's own event loop when returned,
            # or when that loop ends (a sync fixture's session outlives it).
            self.temporary = create_async_engine(target, poolclass=NullPool).sync_engine
            close_at_loop_end(self.temporary)
        else:
            from sqlalchemy import create_engine

            # Pooled for the test (disposed when it ends): a session that commits and
            # reads again reuses its connection instead of opening another (~10 ms).
            self.temporary = create_engine(target)
        self._args: tuple[Any, Any] = self.temporary.dialect.create_connect_args(target)
        event.listen(self.temporary, "do_connect", self._connect_args)

    def _connect_args(
        self, dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> None:
        args, params = self._args
        cargs[:] = args
        cparams.clear()
        cparams.update(params)

    def point(self, url: DatabaseURL) -> tuple[Any, Any, Any]:
        """Route the engine's connections to *url*; return what :meth:`_own_database` undoes."""
        target = self.routed.url.set(database=url.database)
        self._args = self.temporary.dialect.create_connect_args(target)
        original = self.routed.pool
        self.routed.pool = self.temporary.pool
        return self.routed, original, self.temporary


def get_database(config: pytest.Config) -> WorkerDatabase:
    """Return this process's WorkerDatabase (created, not opened, on first call)."""
    database = config.stash.get(_DATABASE_KEY, None)
    if database is None:
        database = config.stash[_DATABASE_KEY] = WorkerDatabase(config, get_settings(config))
    return database


def opened_database(config: pytest.Config) -> WorkerDatabase | None:
    """Return this process's WorkerDatabase if its sandbox is open, else None."""
    database = config.stash.get(_DATABASE_KEY, None)
    return database if database is not None and database.sandbox is not None else None


def stderr_report(config: pytest.Config) -> Callable[[str], None]:
    """Return a progress callback that writes past pytest's output capture."""

    def report(message: str) -> None:
        capman = config.pluginmanager.getplugin("capturemanager")
        context = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with context:
            sys.stderr.write(f"sqlsandbox: {message}\n")
            sys.stderr.flush()

    return report


# -- hooks ---------------------------------------------------------------------


def _configured(settings: Settings) -> bool:
    return bool(settings.migrate or settings.engines or settings.drivers or settings.url_env)


@contextlib.contextmanager
def _reimported_later(root: Path) -> Iterator[None]:
    """Forget the project's modules that the block imported.

    Fingerprinting and building the template import the ``migrate`` and
    ``seed`` targets before ``url_env`` points at this worker's database; a
    module that also builds the app's engine would keep the old URL. Forgotten,
    it is imported again by conftest.py, with the variables set.
    """
    before = set(sys.modules)
    try:
        yield
    finally:
        root = root.resolve()
        for name in set(sys.modules) - before:
            if name.partition(".")[0] == "sqlsandbox":
                continue  # never ourselves, even when developed inside the rootdir
            path = getattr(sys.modules[name], "__file__", None)
            if path is None or "site-packages" in path:
                continue
            with contextlib.suppress(ValueError, OSError):
                Path(path).resolve().relative_to(root)
                del sys.modules[name]


def _usage_error(exc: SandboxError) -> pytest.UsageError:
    return pytest.UsageError(f"sqlsandbox: {exc}")


def _runs_no_test(config: pytest.Config) -> bool:
    """Return whether this pytest call only collects or lists (``--collect-only``, ...)."""
    namespace = getattr(config, "known_args_namespace", None) or config.option
    return any(
        getattr(namespace, name, False)
        for name in ("collectonly", "showfixtures", "show_fixtures_per_test", "markers")
    )


def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """With ``url_env``, make this worker's database before any conftest.py is imported."""
    namespace = early_config.known_args_namespace
    if namespace.help or namespace.version:
        return
    settings = get_settings(early_config)
    if not settings.url_env:
        return
    if _runs_no_test(early_config):
        # Nothing to run, so nothing to build or clone: the app still imports
        # without its own URL (a connection at import time fails, harmlessly).
        get_database(early_config).point_nowhere()
        return
    report = None if is_worker(early_config) else stderr_report(early_config)
    try:
        with _reimported_later(early_config.rootpath):
            if is_controller(early_config):
                get_database(early_config).open_controller(report)
            else:
                get_database(early_config).open(report)
    except SandboxError as exc:
        # Never let the app import with its own URL: it could write to a real database.
        raise _usage_error(exc) from None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the template (controller) or open the worker's database, when configured."""
    config = session.config
    if not _configured(get_settings(config)) or _runs_no_test(config):
        return
    database = get_database(config)
    try:
        if is_controller(config):
            # Before xdist starts the workers, so they find the template complete.
            database.open_template(stderr_report(config))
            if database.clone is not None and database.provisioner is not None:
                database.provisioner.keep_spare("controller")
        else:
            database.ensure_open()
    except SandboxError as exc:
        if not is_worker(config):
            raise _usage_error(exc) from None
        # In a worker the error is kept; every test that uses the database reports it.


def pytest_collection_finish(session: pytest.Session) -> None:
    """Keep clones ready for the isolation='database' tests this run collected (or none)."""
    database = opened_database(session.config)
    if database is None or database.provisioner is None:
        return
    # The next run finds its clone made: one clone per worker made now, when idle.
    database.provisioner.keep_spare("worker", limit=worker_count(session.config))
    wanted = sum(1 for item in session.items if sandbox_spec(item).isolation == "database")
    target = database.warm_target()
    if target and (wanted or database.settings.isolation == "database"):
        # Also 0: clones made ahead at start for tests that turned out not to want them.
        database.provisioner.prewarm("test", min(wanted, target))


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """Run fixtures of a wider scope than the test where their data belongs (see _scopes)."""
    if fixturedef.scope == "function":
        return (yield)
    database = opened_database(request.config)
    if database is None or database.scopes is None:
        return (yield)
    with database.scopes.fixture_setup(fixturedef, request.node):
        result = yield
    return result


def pytest_fixture_post_finalizer(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    """Leave the binding a wider-scoped fixture's teardown ran with."""
    if fixturedef.scope == "function":
        return
    database = opened_database(request.config)
    if database is not None and database.scopes is not None:
        database.scopes.fixture_finished(fixturedef)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """Say so when importing a test module touched the database (no test owns one then)."""
    report = yield
    if report.failed and opened_database(collector.config) is not None:
        longrepr = report.longrepr
        if "OwnershipError" in str(longrepr):
            message = collection_message(collector.nodeid or str(collector.path))
            if hasattr(longrepr, "addsection"):
                longrepr.addsection("sqlsandbox", message)
            else:
                report.longrepr = f"{longrepr}\n\n{message}"
    return report


def collection_message(where: str) -> str:
    """Explain database access while pytest imports (collects) *where*."""
    return (
        f"{where} touched the database while pytest was collecting it (importing the "
        "module, or evaluating a decorator or parametrize argument), where no test owns a "
        "connection. Move that code into a fixture (one of scope session, package, module "
        "or class is fine: its data stays for that scope) or into the test itself; create "
        "engines at import time, but connect later. See "
        "docs/pytest.md#code-that-runs-while-pytest-collects"
    )


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, Any, Any]:
    """In an xdist worker, drop its clones as soon as the session fixtures are torn down.

    xdist interrupts its workers about 5 s after the controller is done, which
    could cut off drops left for ``pytest_unconfigure`` (the controller's reap
    then finds them). The innermost wrapper: this runs after the teardown and
    before xdist's own wrapper tells the controller that the worker finished.
    """
    try:
        return (yield)
    finally:
        if is_worker(session.config):
            database = session.config.stash.get(_DATABASE_KEY, None)
            if database is not None:
                database.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop this process's clones and put the env vars back."""
    database = config.stash.get(_DATABASE_KEY, None)
    if database is not None:
        database.close()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Say where the ``url_env`` variables point (passwords masked)."""
    database = opened_database(config)
    if database is None or not database.settings.url_env:
        return None
    values = database.url_env.values(database.url, hide_password=True)
    return [f"sqlsandbox: {name}={value}" for name, value in values.items()]
