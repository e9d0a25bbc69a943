"""Provisioning: templates built once per fingerprint, fast clones, a warm pool, cleanup.

The usual flow (what the pytest plugin does)::

    from sqlsandbox.provision import Budget, Provisioner, TemplateSpec

    provisioner = Provisioner(server, run_id=run_id, budget=Budget(workers=2))
    provisioner.reap()                                   # leftovers of crashed runs
    provisioner.template(TemplateSpec(migrate="alembic"))  # built at most once
    with provisioner.acquire("test") as lease:           # from the warm pool
        use(lease.url)
    provisioner.close()                                  # drops our clones, reaps
"""

from __future__ import annotations

from ._budget import Budget as Budget
from ._budget import BudgetPlan as BudgetPlan
from ._fingerprint import Fingerprint as Fingerprint
from ._fingerprint import compute_fingerprint as compute_fingerprint
from ._names import REGISTRY_DATABASE as REGISTRY_DATABASE
from ._names import ParsedName as ParsedName
from ._names import make_name as make_name
from ._names import parse_name as parse_name
from ._pool import PoolStats as PoolStats
from ._provisioner import DEFAULT_WARM as DEFAULT_WARM
from ._provisioner import Lease as Lease
from ._provisioner import Provisioner as Provisioner
from ._reaper import DEFAULT_STALE_AFTER as DEFAULT_STALE_AFTER
from ._reaper import ReapReport as ReapReport
from ._reaper import live_owners as live_owners
from ._reaper import prune_templates as prune_templates
from ._reaper import reap as reap
from ._registry import DatabaseRow as DatabaseRow
from ._registry import OwnerRow as OwnerRow
from ._registry import Registry as Registry
from ._sources import async_scheme as async_scheme
from ._sources import sync_scheme as sync_scheme
from ._spec import SETUP_MODES as SETUP_MODES
from ._spec import TemplateSpec as TemplateSpec
from ._template import Template as Template

__all__ = [
    "DEFAULT_STALE_AFTER",
    "DEFAULT_WARM",
    "REGISTRY_DATABASE",
    "SETUP_MODES",
    "Budget",
    "BudgetPlan",
    "DatabaseRow",
    "Fingerprint",
    "Lease",
    "OwnerRow",
    "ParsedName",
    "PoolStats",
    "Provisioner",
    "ReapReport",
    "Registry",
    "Template",
    "TemplateSpec",
    "async_scheme",
    "compute_fingerprint",
    "live_owners",
    "make_name",
    "parse_name",
    "prune_templates",
    "reap",
    "sync_scheme",
]
