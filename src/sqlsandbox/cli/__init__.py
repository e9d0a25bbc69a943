"""The ``sqlsandbox`` command line.

Each topic lives in its own module exposing ``register(subparsers)``, which adds
its sub-commands and sets ``func`` (taking the parsed namespace, returning an
exit status) on each.
"""

from __future__ import annotations

import argparse
import sys

from .._exceptions import SandboxError
from .._version import __version__
from . import _provision, _server

__all__ = ["build_parser", "main"]

_TOPICS = (_server, _provision)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``sqlsandbox`` command."""
    parser = argparse.ArgumentParser(
        prog="sqlsandbox",
        description="Fast, isolated, parallel database tests: servers, templates and clones.",
    )
    parser.add_argument("--version", action="version", version=f"sqlsandbox {__version__}")
    parser.add_argument(
        "--url",
        default=None,
        help="server URL (default: SQLSANDBOX_URL, then [tool.sqlsandbox] url, else embedded)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for topic in _TOPICS:
        topic.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        status: int = func(args)
    except SandboxError as exc:
        print(f"sqlsandbox: error: {exc}", file=sys.stderr)
        return 1
    return status
