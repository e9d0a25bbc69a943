"""``sqlsandbox server start|stop|status``: drive the embedded PostgreSQL by hand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..servers._embedded import EmbeddedPostgres

__all__ = ["register"]

_STATUS_NOT_RUNNING = 3  # as LSB init scripts answer "status"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``server start|stop|status`` to *subparsers*."""
    server = subparsers.add_parser(
        "server",
        help="start, stop or inspect the embedded PostgreSQL",
        description=(
            "Manage the embedded PostgreSQL that test runs share when no server is "
            "configured (SQLSANDBOX_URL). Its cluster is cached per PostgreSQL version."
        ),
    )
    actions = server.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start",
        help="start the server (test runs then reuse it)",
        description=(
            "Start the embedded PostgreSQL and print its URL. Without --keep, the next "
            "test run that uses it stops it when it ends."
        ),
    )
    start.add_argument(
        "--keep",
        action="store_true",
        help="keep it running after test runs, until 'sqlsandbox server stop'",
    )
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the server, even if test runs use it")
    stop.set_defaults(func=_stop)

    status = actions.add_parser(
        "status", help="say whether it runs (exit status 0 if it does, 3 if not)"
    )
    status.set_defaults(func=_status)

    for parser in (start, stop, status):
        parser.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help="cache directory of the cluster (default: SQLSANDBOX_CACHE_DIR, else per user)",
        )


def _server(args: argparse.Namespace) -> EmbeddedPostgres:
    # Imported here so that `sqlsandbox --help` stays fast and works without psutil.
    from ..servers._embedded import EmbeddedPostgres

    return EmbeddedPostgres(args.cache_dir)


def _start(args: argparse.Namespace) -> int:
    server = _server(args)
    url = server.start(keep=args.keep)
    print(f"embedded PostgreSQL {server.version} running at {url.masked()}")
    print(f"data directory: {server.data_dir}")
    if args.keep:
        print("it stays up until: sqlsandbox server stop")
    else:
        print("the next test run that uses it stops it at its end (or: sqlsandbox server stop)")
    return 0


def _stop(args: argparse.Namespace) -> int:
    server = _server(args)
    if server.stop():
        print(f"embedded PostgreSQL {server.version} stopped ({server.data_dir})")
    else:
        print(f"embedded PostgreSQL {server.version} was not running ({server.data_dir})")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = _server(args).status()
    if not status.running:
        print(f"embedded PostgreSQL {status.version}: not running")
        print(
            f"data directory: {status.data_dir}" + ("" if status.cluster_exists else " (none yet)")
        )
        return _STATUS_NOT_RUNNING
    print(f"embedded PostgreSQL {status.version}: running")
    print(f"url: {status.url.masked() if status.url else '-'}")
    print(f"pid: {status.pid}")
    print(f"port: {status.port}")
    print(f"socket directory: {status.socket_dir}")
    print(f"data directory: {status.data_dir}")
    print(f"leases: {len(status.users)}" + (" (kept running)" if status.keep else ""))
    return 0
