"""Templates: built at most once per fingerprint, complete or not at all.

How a build stays safe:

1. Take the build lock of the fingerprint (file lock, then server lock).
2. Under the lock, a ``ready`` registry row whose database exists means an
   earlier run (or another worker) built it: reuse it.
3. Rows in state ``building`` under the lock can only come from a builder that
   died (a live one would hold the lock): drop them.
4. Register the new name as ``building`` *before* creating the database, run
   the migrations and the seed, repair sequences, close every connection to
   it, and only then flip the row to ``ready``.

Completion is a registry state rather than a rename (``..._building`` to
``..._tpl``) because MariaDB cannot rename a database and PostgreSQL cannot
rename one with sessions attached; one state change works the same on all
three backends and is atomic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import ProvisioningError, SandboxError
from .._urls import DatabaseURL
from ..servers._errors import scrub
from . import _dbapi
from ._build import apply_sources, run_in_child, run_in_thread
from ._fingerprint import Fingerprint, compute_fingerprint
from ._locks import build_lock
from ._names import TEMPLATE_KIND, make_name
from ._reaper import prune_templates
from ._sources import BuildContext, StepFailed, describe_error

if TYPE_CHECKING:
    from ..servers._base import Server
    from ._registry import DatabaseRow, Owner, Registry
    from ._spec import TemplateSpec

__all__ = ["Template", "TemplateBuilder"]

log = logging.getLogger("sqlsandbox.provision")

# Every sequence owned by a column (serial or identity), with its table and column.
_OWNED_SEQUENCES = """
SELECT format('%I.%I', sn.nspname, s.relname), format('%I.%I', tn.nspname, t.relname),
       quote_ident(a.attname)
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_class t ON t.oid = d.refobjid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i')
"""


_CREATING = "creating the database"
_REPAIRING = "moving sequences past the ids the migrations inserted"
_CLOSING = "closing the connections to the template"
_RUN_FIX = (
    "Run the migrations (and seed) by hand against an empty database to see the whole "
    "error, fix it and run again; the template is rebuilt automatically."
)
_BUILD_FIXES = {
    _CREATING: (
        "Check that the server is running and that the URL's user may create databases, "
        "then run again."
    ),
    _REPAIRING: (
        "A sequence owned by a column could not be set past that column's largest value: "
        "check the sequences your migrations create (OWNED BY must name an integer column), "
        "then run again."
    ),
    _CLOSING: (
        "Make your migrations and seed close (or commit) every connection they open before "
        "they return, and check that the server is running; then run again. If old "
        "templates fill the server, 'sqlsandbox templates prune' drops them."
    ),
}


@dataclasses.dataclass(frozen=True)
class Template:
    """A complete template on the server."""

    name: str
    fingerprint: Fingerprint
    spec: TemplateSpec
    url: DatabaseURL
    #: Whether this call built it (False: reused from an earlier build).
    built: bool
    #: Seconds the build took (None if unknown).
    build_s: float | None


class TemplateBuilder:
    """Find or build the template of a spec, at most once per fingerprint."""

    def __init__(
        self,
        server: Server,
        registry: Registry,
        owner: Owner,
        *,
        cache_dir: Path,
        report: Callable[[str], None],
        lock_timeout: float | None,
        keep_templates: int,
        stale_after: float,
        isolated: bool = False,
    ) -> None:
        self.server = server
        #: Run migrations and seed in a child process (see ``_build``).
        self.isolated = isolated
        self.registry = registry
        self.owner = owner
        self.cache_dir = cache_dir
        self.report = report
        self.lock_timeout = lock_timeout
        self.keep_templates = keep_templates
        self.stale_after = stale_after
        self._server_version: str | None = None

    @property
    def backend(self) -> str:
        """Return the server's engine."""
        return self.server.backend

    def server_version(self) -> str:
        """Return the server version (asked once)."""
        if self._server_version is None:
            self._server_version = self.server.version()
        return self._server_version

    def fingerprint(self, spec: TemplateSpec) -> Fingerprint:
        """Return the fingerprint of *spec* on this server."""
        return compute_fingerprint(spec, backend=self.backend, server_version=self.server_version())

    def ensure(self, spec: TemplateSpec) -> Template:
        """Return the complete template of *spec*, building it if no run has yet."""
        fingerprint = self.fingerprint(spec)
        key = f"template:{fingerprint.value}"
        # The usual case, a template built by an earlier run: read it under the
        # lock held shared (one statement on the registry's connection).
        with self.registry.shared_lock(key) as held:
            if held:
                self.registry.add_use(self.owner.owner_id, fingerprint.value)
                template = self._find_ready(spec, fingerprint, clean=False)
                if template is not None:
                    return template
        with build_lock(
            self.registry,
            self.cache_dir,
            key,
            timeout=self.lock_timeout,
            what=f"building the template {fingerprint.short} ({spec.describe()})",
        ):
            # Registered under the lock, so pruning (which takes the same lock)
            # never drops a template between this check and the first clone.
            self.registry.add_use(self.owner.owner_id, fingerprint.value)
            template = self._find_ready(spec, fingerprint, clean=True)
            if template is None:
                template = self._build(spec, fingerprint)
        if template.built:
            prune_templates(
                self.server,
                self.registry,
                cache_dir=self.cache_dir,
                keep=max(0, self.keep_templates - 1),
                project=spec.project_key,
                exclude=[fingerprint.value],
                stale_after=self.stale_after,
                report_to=self.report,
            )
        return template

    def _find_ready(
        self, spec: TemplateSpec, fingerprint: Fingerprint, *, clean: bool
    ) -> Template | None:
        """Return the ready template of *fingerprint*, or None.

        With *clean* (only under the exclusive lock) rows of half-built or
        vanished templates are dropped on the way; without, they are left
        for a process that holds it.
        """
        found: Template | None = None
        for row in self.registry.databases(fingerprint=fingerprint.value, kind=TEMPLATE_KIND):
            if not clean:
                if found is None and row.state == "ready" and self.server.database_exists(row.name):
                    found = self._reused(spec, fingerprint, row)
                continue
            if row.state == "ready":
                if found is not None:
                    continue
                if self.server.database_exists(row.name):
                    found = self._reused(spec, fingerprint, row)
                    continue
                # Registered as complete but dropped by hand: forget it, build anew.
            else:
                # Under the build lock, a 'building' row can only be a dead builder's.
                self.report(f"dropping half-built template {row.name} left by a crashed run")
            self.server.drop_database(row.name, missing_ok=True)
            self.registry.remove_database(row.name)
        return found

    def _reused(self, spec: TemplateSpec, fingerprint: Fingerprint, row: DatabaseRow) -> Template:
        self.registry.touch(row.name)
        self.report(f"reusing template {row.name} ({spec.describe()})")
        url = self.server.database_url(row.name)
        return Template(row.name, fingerprint, spec, url, built=False, build_s=row.build_s)

    def _build(self, spec: TemplateSpec, fingerprint: Fingerprint) -> Template:
        name = make_name(fingerprint.value, TEMPLATE_KIND)
        started = time.perf_counter()
        self.report(f"building template {name} ({spec.describe()}) on {self.server.url.masked()}")
        self.registry.add_database(
            name,
            fingerprint=fingerprint.value,
            kind=TEMPLATE_KIND,
            state="building",
            owner_id=self.owner.owner_id,
            project=spec.project_key,
            label=spec.describe()[:255],
            details=json.dumps({"parts": dict(fingerprint.parts), "root": str(spec.root)}),
        )
        # The step under way, for the message if something other than a migration fails.
        step = [_CREATING]
        try:
            self.server.create_database(name)
            url = self.server.database_url(name)
            ctx = BuildContext(url=url, database=name, report=self._prefixed(name), spec=spec)
            step[0] = f"running {spec.describe()}"
            if self.isolated:
                run_in_child(spec, ctx, self.backend)
            else:
                run_in_thread(lambda: apply_sources(spec, ctx, self.backend))
            self._finish(name, url, step)
        except BaseException as exc:
            self._discard(name)
            if isinstance(exc, StepFailed):
                what = "seed function" if exc.step.startswith("seed ") else "migration"
                raise ProvisioningError(
                    f"Building the template for {self.server.url.masked()} failed in "
                    f"{exc.step!r} ({spec.describe()}):\n    {self._describe(exc.error)}\n"
                    f"Nothing was kept: the half-built template {name} was dropped. Fix the "
                    f"{what} and run again; the template is rebuilt automatically."
                ) from exc.error
            if isinstance(exc, SandboxError) or not isinstance(exc, Exception):
                raise
            raise ProvisioningError(
                f"Building the template {name} on {self.server.url.masked()} failed while "
                f"{step[0]}:\n    {self._describe(exc)}\n"
                "Nothing was kept: the half-built template was dropped. "
                + _BUILD_FIXES.get(step[0], _RUN_FIX)
            ) from exc
        build_s = time.perf_counter() - started
        self.registry.mark_ready(name, build_s=build_s)
        self.report(f"template {name} ready in {build_s:.2f}s")
        return Template(name, fingerprint, spec, url, built=True, build_s=build_s)

    def _describe(self, exc: BaseException) -> str:
        """Return the error on a few lines, without the server's password."""
        return scrub(describe_error(exc), self.server.url)

    def _prefixed(self, name: str) -> Callable[[str], None]:
        def report(message: str) -> None:
            self.report(f"template {name}: {message}")

        return report

    def _finish(self, name: str, url: DatabaseURL, step: list[str]) -> None:
        """Make the template safe to clone: sequences past seeded ids, nobody connected.

        Names what it is doing in ``step[0]``, for the error if it fails.
        """
        if self.backend == "postgresql":
            step[0] = _REPAIRING
            conn = _dbapi.connect(url)
            try:
                _repair_sequences(conn)
            finally:
                conn.close()
            step[0] = _CLOSING
            # The last session starts after every change, so it leaves the relation
            # cache init file (pg_internal.init) behind; FILE_COPY clones copy it,
            # and the first connection to each clone is 3-7 ms of server CPU cheaper
            # (measured on the embedded server: 6.3-10.9 ms without, 3.2-3.8 ms with).
            _dbapi.connect(url).close()
            # Nobody can connect to it any more, so CREATE DATABASE ... TEMPLATE
            # never finds "other users" on it (the clones do allow connections).
            self.server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            self.server.terminate_connections(name)
        elif self.backend == "sqlite":
            step[0] = _CLOSING
            conn = _dbapi.connect(url)
            try:
                # A file copy must not miss pages still in a WAL file.
                conn.execute("PRAGMA journal_mode = DELETE")
            finally:
                conn.close()
        else:
            step[0] = _CLOSING
            self.server.terminate_connections(name)

    def _discard(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.server.drop_database(name, missing_ok=True)
        with contextlib.suppress(Exception):
            self.registry.remove_database(name)


def _repair_sequences(conn: Any) -> None:
    """Move every column-owned sequence past the largest id already in its column."""
    rows = conn.execute(_OWNED_SEQUENCES).fetchall()
    for sequence, table, column in rows:
        conn.execute(
            f"SELECT setval('{sequence}'::regclass, x.m) "
            f"FROM (SELECT max({column})::bigint AS m FROM {table}) x, {sequence} s "
            "WHERE x.m IS NOT NULL "
            "AND x.m >= CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END"
        )
