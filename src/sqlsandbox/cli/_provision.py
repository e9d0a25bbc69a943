"""Sub-commands of ``sqlsandbox`` (to be filled in)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this topic's sub-commands to *subparsers*."""
