"""Facts about pytest-xdist that the rest of the plugin needs, without importing xdist.

Workers learn who they are from the env vars xdist sets before it builds
their config, so these answers hold from ``pytest_load_initial_conftests`` on.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

__all__ = ["is_controller", "is_worker", "run_uid", "worker_count", "worker_id", "worker_index"]

_RUN_UID = pytest.StashKey[str]()


def is_worker(config: pytest.Config) -> bool:
    """Return True in an xdist worker process."""
    return hasattr(config, "workerinput") or "PYTEST_XDIST_WORKER" in os.environ


def is_controller(config: pytest.Config) -> bool:
    """Return True in the process that hands tests to xdist workers (and runs none)."""
    if is_worker(config):
        return False
    namespace = getattr(config, "known_args_namespace", None) or config.option
    if getattr(namespace, "dist", "no") == "no" and not getattr(namespace, "numprocesses", None):
        return False
    # `-n 0` runs in-process; `-p no:xdist` leaves the options unregistered.
    return config.pluginmanager.hasplugin("xdist") and getattr(namespace, "numprocesses", 1) != 0


def worker_id(config: pytest.Config) -> str:
    """Return ``gw0``, ``gw1``, ... in a worker, ``main`` elsewhere."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput["workerid"])
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def worker_index(config: pytest.Config) -> int:
    """Return this worker's number (0 for ``gw0`` and outside xdist)."""
    digits = worker_id(config).lstrip("gw")
    return int(digits) if digits.isdigit() else 0


def worker_count(config: pytest.Config) -> int:
    """Return how many workers run tests (1 outside xdist)."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput["workercount"])
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)


def run_uid(config: pytest.Config) -> str:
    """Return an id shared by the controller and every worker of this run."""
    uid = config.stash.get(_RUN_UID, None)
    if uid is None:
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        if workerinput is not None:
            uid = str(workerinput["testrunuid"])
        else:
            given = getattr(config.option, "testrunuid", None)
            uid = given or os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
            if hasattr(config.option, "testrunuid") and not given:
                # xdist reads --testrunuid when it starts the workers: hand them ours.
                config.option.testrunuid = uid
        config.stash[_RUN_UID] = uid
    return uid


def pytest_configure(config: pytest.Config) -> None:
    """Fix the run id before xdist starts its workers, so they share it."""
    run_uid(config)
