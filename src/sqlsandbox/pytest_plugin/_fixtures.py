"""Fixtures the plugin offers to every test suite."""

from __future__ import annotations

import pytest

from ._unique import Unique
from ._xdist import run_uid, worker_count, worker_index

__all__ = ["unique"]


@pytest.fixture(scope="session")
def unique(pytestconfig: pytest.Config) -> Unique:
    """Values no other test of this run gets, on any worker: ``unique.email()``, ...

    Session-scoped, so module- and session-scoped fixtures may use it too.
    """
    return Unique(run_uid(pytestconfig), worker_index(pytestconfig), worker_count(pytestconfig))
