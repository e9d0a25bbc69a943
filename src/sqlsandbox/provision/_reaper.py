"""Cleanup: drop what dead runs left behind, and templates nobody needs any more.

Two rules keep this safe. A database is only dropped if its name is one
sqlsandbox generates *and* the registry says sqlsandbox created it; anything
else on the server (a user database, even one that starts with
``sqlsandbox_``) is never touched. And a database is only dropped if its owner
is dead: same host and the process is gone, or another host whose heartbeat
is older than ``stale_after``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ._locks import build_lock
from ._names import TEMPLATE_KIND, parse_name
from ._registry import DatabaseRow, owner_alive

if TYPE_CHECKING:
    from ..servers._base import Server
    from ._registry import Registry

__all__ = ["DEFAULT_STALE_AFTER", "ReapReport", "live_owners", "prune_templates", "reap"]

log = logging.getLogger("sqlsandbox.provision")

#: Seconds without a heartbeat after which an owner on another host counts as dead.
DEFAULT_STALE_AFTER = 300.0


@dataclasses.dataclass
class ReapReport:
    """What a cleanup dropped and forgot."""

    dropped: list[str] = dataclasses.field(default_factory=list)
    owners_removed: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.dropped or self.owners_removed or self.errors)


def live_owners(registry: Registry, *, stale_after: float) -> set[str]:
    """Return the ids of the owners that are alive now."""
    now = registry.now()
    return {
        row.owner_id
        for row in registry.owners()
        if owner_alive(row, now=now, stale_after=stale_after)
    }


def _drop(server: Server, registry: Registry, row: DatabaseRow, report: ReapReport) -> None:
    if parse_name(row.name) is None:
        # A registry row we did not write: leave the database alone.
        return
    try:
        server.drop_database(row.name, missing_ok=True)
    except Exception as exc:
        report.errors.append(f"{row.name}: {exc}")
        log.warning("sqlsandbox: could not drop %s: %s", row.name, exc)
        return
    registry.remove_database(row.name)
    report.dropped.append(row.name)


def reap(
    server: Server,
    registry: Registry,
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    dry_run: bool = False,
) -> ReapReport:
    """Drop every database whose owner is dead, and forget the dead owners.

    Complete templates have no owner and are kept: they are the cache
    (``prune_templates`` removes them).
    """
    report = ReapReport()
    # Databases first, owners second: an owner is always registered before its
    # databases, so any database read here has its owner in the list below.
    rows = registry.databases()
    owners = registry.owners()
    now = registry.now()
    alive = {o.owner_id for o in owners if owner_alive(o, now=now, stale_after=stale_after)}
    for row in rows:
        if row.owner_id is None or row.owner_id in alive:
            continue
        if dry_run:
            report.dropped.append(row.name)
        else:
            _drop(server, registry, row, report)
    for owner in owners:
        if owner.owner_id in alive:
            continue
        report.owners_removed.append(owner.owner_id)
        if not dry_run:
            registry.remove_owner(owner.owner_id)
    if report.dropped:
        log.info("sqlsandbox: reaped %d database(s) of dead runs", len(report.dropped))
    return report


def prune_templates(
    server: Server,
    registry: Registry,
    *,
    cache_dir: Path,
    keep: int = 0,
    project: str | None = None,
    exclude: Iterable[str] = (),
    stale_after: float = DEFAULT_STALE_AFTER,
    dry_run: bool = False,
    report_to: Callable[[str], None] | None = None,
) -> ReapReport:
    """Drop complete templates no live run uses, and their spares; keep the *keep* newest.

    The newest are counted per project. Only *project*'s templates are
    considered if given; fingerprints in
    *exclude* are always kept. A template whose build lock is held (being
    built or checked right now) is skipped, never waited for.
    """
    report = ReapReport()
    excluded = set(exclude)
    rows = [
        row
        for row in registry.databases(kind=TEMPLATE_KIND)
        if row.state == "ready" and (project is None or row.project == project)
    ]
    alive = live_owners(registry, stale_after=stale_after)
    by_project: dict[str | None, list[DatabaseRow]] = {}
    for row in rows:
        by_project.setdefault(row.project, []).append(row)
    for group in by_project.values():
        group.sort(key=lambda r: r.last_used_at, reverse=True)
        kept = 0
        for row in group:
            if row.fingerprint in excluded:
                kept += 1
                continue
            if kept < keep:
                kept += 1
                continue
            if any(owner in alive for owner in registry.users_of(row.fingerprint)):
                continue
            spares = [
                other
                for other in registry.databases(fingerprint=row.fingerprint)
                if other.state == "spare"
            ]
            if dry_run:
                report.dropped.append(row.name)
                report.dropped.extend(spare.name for spare in spares)
                continue
            with contextlib.ExitStack() as stack:
                held = stack.enter_context(
                    build_lock(
                        registry,
                        cache_dir,
                        f"template:{row.fingerprint}",
                        timeout=0,
                        what="pruning templates",
                    )
                )
                if not held:
                    continue
                # Checked again under the lock: a run may have started using it.
                if live_owners(registry, stale_after=stale_after) & set(
                    registry.users_of(row.fingerprint)
                ):
                    continue
                _drop(server, registry, row, report)
                for spare in spares:  # clones a run left for the next: of no use without it
                    _drop(server, registry, spare, report)
                if report_to is not None and row.name in report.dropped:
                    report_to(f"dropped old template {row.name} ({row.label or 'no label'})")
    return report
