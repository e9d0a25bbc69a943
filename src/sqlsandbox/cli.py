"""The ``sqlsandbox`` command line."""

from __future__ import annotations

import argparse
import sys

from ._version import __version__


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``sqlsandbox`` command."""
    parser = argparse.ArgumentParser(prog="sqlsandbox", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sqlsandbox {__version__}")
    parser.add_subparsers(dest="command")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
