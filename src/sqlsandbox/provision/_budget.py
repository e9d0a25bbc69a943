"""The budget: how many databases and connections a run may use on a server.

Warm clones cost no connections but do cost databases (disk, catalog
entries); every worker costs connections (the app's pool plus sqlsandbox's
own). The budget is checked once, before workers start, so a run that
cannot fit fails with an error saying what to change instead of running into
"too many connections" halfway.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .._exceptions import ProvisioningError

if TYPE_CHECKING:
    from ..servers._base import Server

__all__ = ["Budget", "BudgetPlan"]

#: Connections sqlsandbox itself holds per worker: the registry, the admin one, and three
#: more the warm pool opens when it first has work (clones made and dropped side by side).
OWN_CONNECTIONS_PER_WORKER = 5
#: Databases a worker needs at the least: its own clone and one fresh clone for a test.
MIN_DATABASES_PER_WORKER = 2
#: Databases a worker may hold when no ``max_databases`` is set.
DEFAULT_DATABASES_PER_WORKER = 10


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """What the budget allows each worker process."""

    workers: int
    databases_per_worker: int
    connections_available: int
    connections_needed: int


@dataclasses.dataclass(frozen=True)
class Budget:
    """Limits of one run (all its workers together) on one server."""

    #: Databases the whole run may hold at once, templates included (None: 10 per worker).
    max_databases: int | None = None
    #: Connections left free for everything else using the server.
    reserve_connections: int = 5
    #: Connections the application under test opens per worker (its pool size).
    connections_per_worker: int = 4
    #: Worker processes of the run (pytest-xdist ``-n``; 1 without xdist).
    workers: int = 1

    def databases_per_worker(self) -> int:
        """Return how many databases each worker may hold (one template set aside)."""
        if self.max_databases is None:
            return DEFAULT_DATABASES_PER_WORKER
        return (self.max_databases - 1) // max(1, self.workers)

    def check(self, server: Server, *, in_use: int | None = None) -> BudgetPlan:
        """Return the plan for *server*, or raise ProvisioningError saying what to change.

        *in_use* is how many connections others hold now (default: ask the server).
        """
        workers = max(1, self.workers)
        per_worker = self.databases_per_worker()
        if per_worker < MIN_DATABASES_PER_WORKER:
            needed = workers * MIN_DATABASES_PER_WORKER + 1
            fits = max(1, ((self.max_databases or 0) - 1) // MIN_DATABASES_PER_WORKER)
            raise ProvisioningError(
                f"max_databases = {self.max_databases} is too small for {workers} worker(s) on "
                f"{server.url.masked()}: each worker needs at least {MIN_DATABASES_PER_WORKER} "
                "databases (its own clone and a fresh clone for isolation='database' tests) "
                f"and the template needs 1. Raise --sqlsandbox-max-databases "
                f"(SQLSANDBOX_MAX_DATABASES) to at least {needed}, or run fewer workers "
                f"(-n {fits} fits)."
            )
        limit = server.max_connections()
        used = server.connections_in_use() if in_use is None else in_use
        available = limit - self.reserve_connections - used
        each = self.connections_per_worker + OWN_CONNECTIONS_PER_WORKER
        needed = workers * each
        if needed > available:
            fits = max(0, available // each)
            raise ProvisioningError(
                f"Not enough connections on {server.url.masked()} for {workers} worker(s): the "
                f"server allows {limit} (max_connections), {used} are in use and "
                f"{self.reserve_connections} are kept in reserve, which leaves {available}; "
                f"{workers} workers need {workers} x {each} = {needed} "
                f"({self.connections_per_worker} for the app, "
                f"{OWN_CONNECTIONS_PER_WORKER} for sqlsandbox). Run fewer workers"
                + (f" (-n {fits} fits)" if fits else "")
                + ", lower --sqlsandbox-connections-per-worker "
                "(SQLSANDBOX_CONNECTIONS_PER_WORKER), lower --sqlsandbox-reserve-connections, "
                "or raise max_connections on the server."
            )
        return BudgetPlan(
            workers=workers,
            databases_per_worker=per_worker,
            connections_available=available,
            connections_needed=needed,
        )
