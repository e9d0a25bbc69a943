"""``sqlsandbox templates ls|prune`` and ``sqlsandbox reap``: look at and clean up a server.

The server is the global ``--url``, else ``SQLSANDBOX_URL``, else ``url`` in
``[tool.sqlsandbox]`` of ./pyproject.toml, else the embedded PostgreSQL if it
is running. Nothing here creates anything: a server sqlsandbox never used has
no registry, and the commands say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..provision import Registry
    from ..servers import Server

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``templates ls|prune`` and ``reap`` to *subparsers*."""
    templates = subparsers.add_parser(
        "templates",
        help="list or prune template databases",
        description=(
            "Templates are built once per fingerprint of your migrations and reused by "
            "later runs. List them, or drop those no running test run uses."
        ),
    )
    actions = templates.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser(
        "ls", help="list templates (and how many clones each has)", description="List templates."
    )
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_ls)

    prune = actions.add_parser(
        "prune",
        help="drop templates no running test run uses",
        description=(
            "Drop complete templates that no live run clones from. The next run "
            "rebuilds what it needs."
        ),
    )
    prune.add_argument(
        "--keep",
        type=int,
        default=0,
        metavar="N",
        help="keep the N most recently used templates of each project (default 0)",
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    prune.set_defaults(func=_prune)

    reap = subparsers.add_parser(
        "reap",
        help="drop databases left behind by crashed or killed test runs",
        description=(
            "Drop every database whose run is dead: on this host its process is gone, "
            "on other hosts its heartbeat is older than --stale-after. Databases "
            "sqlsandbox did not create are never touched; complete templates are kept "
            "(see 'templates prune')."
        ),
    )
    reap.add_argument(
        "--stale-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="heartbeat age after which a run on another host counts as dead (default 300)",
    )
    reap.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    reap.set_defaults(func=_reap)


def _server_url(args: argparse.Namespace) -> str | None:
    if args.url:
        return str(args.url)
    if os.environ.get("SQLSANDBOX_URL"):
        return os.environ["SQLSANDBOX_URL"]
    from .._settings import load_settings

    settings = load_settings(Path.cwd(), os.environ)
    if settings.url:
        return settings.url
    from ..servers._embedded import EmbeddedPostgres

    status = EmbeddedPostgres().status()
    return status.url.render() if status.running and status.url else None


def _open(args: argparse.Namespace) -> tuple[Server, Registry] | None:
    """Return the server and its registry, or None (after saying why) if there is nothing."""
    from ..provision import REGISTRY_DATABASE, Registry
    from ..servers import open_server

    url = _server_url(args)
    if url is None:
        print(
            "sqlsandbox: no server named (--url, SQLSANDBOX_URL, [tool.sqlsandbox] url) and "
            "the embedded PostgreSQL is not running: nothing to do."
        )
        return None
    server = open_server(url)
    if not server.database_exists(REGISTRY_DATABASE):
        print(f"sqlsandbox: no sqlsandbox databases on {server.url.masked()}.")
        server.close()
        return None
    return server, Registry(server).open()


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def _ls(args: argparse.Namespace) -> int:
    from ..provision import DEFAULT_STALE_AFTER, live_owners
    from ..provision._names import TEMPLATE_KIND

    opened = _open(args)
    if opened is None:
        return 0
    server, registry = opened
    try:
        rows = registry.databases()
        now = registry.now()
        alive = live_owners(registry, stale_after=DEFAULT_STALE_AFTER)
        templates = [r for r in rows if r.kind == TEMPLATE_KIND]
        entries = []
        for row in templates:
            clones = [
                r for r in rows if r.kind != TEMPLATE_KIND and r.fingerprint == row.fingerprint
            ]
            users = [o for o in registry.users_of(row.fingerprint) if o in alive]
            entries.append(
                {
                    "name": row.name,
                    "state": row.state,
                    "project": row.project,
                    "source": row.label,
                    "fingerprint": row.fingerprint,
                    "build_s": row.build_s,
                    "last_used_s_ago": round(now - row.last_used_at, 1),
                    "clones": len(clones),
                    "live_runs": len(users),
                    "exists": server.database_exists(row.name),
                }
            )
        if args.json:
            print(json.dumps(entries, indent=2))
            return 0
        if not entries:
            print(f"no templates on {server.url.masked()}")
            return 0
        print(f"templates on {server.url.masked()}:")
        header = ("NAME", "STATE", "SOURCE", "BUILD", "LAST USED", "CLONES", "LIVE RUNS")
        table = [header]
        for e in entries:
            state = str(e["state"]) + ("" if e["exists"] else " (missing)")
            build = "-" if e["build_s"] is None else f"{e['build_s']:.2f}s"
            table.append(
                (
                    str(e["name"]),
                    state,
                    str(e["source"] or "-"),
                    build,
                    _ago(float(str(e["last_used_s_ago"]))),
                    str(e["clones"]),
                    str(e["live_runs"]),
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for r in table:
            cells = (cell.ljust(width) for cell, width in zip(r, widths, strict=True))
            print("  ".join(cells).rstrip())
        return 0
    finally:
        registry.close()
        server.close()


def _prune(args: argparse.Namespace) -> int:
    from ..provision import prune_templates
    from ..servers._embedded import default_cache_dir

    if args.keep < 0:
        print(
            f"sqlsandbox: error: --keep must be 0 or more, not {args.keep}: it is how many "
            "unused templates of each project to keep (0 drops them all).",
            file=sys.stderr,
        )
        return 2
    opened = _open(args)
    if opened is None:
        return 0
    server, registry = opened
    try:
        started = time.perf_counter()
        report = prune_templates(
            server, registry, cache_dir=default_cache_dir(), keep=args.keep, dry_run=args.dry_run
        )
        verb = "would drop" if args.dry_run else "dropped"
        for name in report.dropped:
            print(f"{verb} {name}")
        for error in report.errors:
            print(f"could not drop {error}")
        print(
            f"{verb} {len(report.dropped)} template(s) on {server.url.masked()} "
            f"in {time.perf_counter() - started:.2f}s"
        )
        return 1 if report.errors else 0
    finally:
        registry.close()
        server.close()


def _reap(args: argparse.Namespace) -> int:
    from ..provision import DEFAULT_STALE_AFTER, reap

    opened = _open(args)
    if opened is None:
        return 0
    server, registry = opened
    try:
        stale_after = DEFAULT_STALE_AFTER if args.stale_after is None else args.stale_after
        report = reap(server, registry, stale_after=stale_after, dry_run=args.dry_run)
        verb = "would drop" if args.dry_run else "dropped"
        for name in report.dropped:
            print(f"{verb} {name}")
        for error in report.errors:
            print(f"could not drop {error}")
        print(
            f"{verb} {len(report.dropped)} database(s) of {len(report.owners_removed)} dead "
            f"run process(es) on {server.url.masked()}"
        )
        return 1 if report.errors else 0
    finally:
        registry.close()
        server.close()
