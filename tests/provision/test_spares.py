"""Spares: a clone a run leaves for the next, so the next run's clone costs no wait."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sqlsandbox.provision import Provisioner, TemplateSpec
from sqlsandbox.servers import Server

from .conftest import query, write_sql_project

MakeProvisioner = Callable[..., Provisioner]


@pytest.fixture
def spec(tmp_path: Path, backend: str) -> TemplateSpec:
    write_sql_project(tmp_path, backend)
    return TemplateSpec(migrate="sql:sql", root=tmp_path)


def _spares(provisioner: Provisioner) -> list[str]:
    """The spares in the registry, read through *provisioner* (an open one)."""
    return [row.name for row in provisioner.registry.databases() if row.state == "spare"]


def test_a_spare_outlives_its_run_and_is_the_next_runs_clone(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    first = make_provisioner()
    first.template(spec)
    used = first.clone("worker")
    first.keep_spare("worker")
    assert first.wait_warm(60)
    first.close()
    second = make_provisioner()
    (spare,) = _spares(second)
    assert server.database_exists(spare) and spare != used.name
    assert not server.database_exists(used.name)

    second.template(spec)
    lease = second.clone("worker")
    # The spare, fresh from the template, now this run's: no longer waiting for anyone.
    assert lease.name == spare
    assert _spares(second) == []
    (row,) = [r for r in second.registry.databases() if r.name == spare]
    assert (row.state, row.owner_id) == ("clone", second.owner.owner_id)
    assert query(lease.url, "SELECT count(*) FROM users") == [(2,)]
    # Reaping leaves spares alone (they have no owner), and a spare is taken once.
    second.reap()
    assert server.database_exists(spare)
    assert second.clone("worker").name != spare


def test_spares_are_limited_and_go_with_their_template(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    for _ in range(3):
        provisioner = make_provisioner()
        template = provisioner.template(spec)
        provisioner.keep_spare("worker", limit=2)
        assert provisioner.wait_warm(60)
        provisioner.close()
    pruner = make_provisioner()
    spares = _spares(pruner)
    assert len(spares) == 2

    report = pruner.prune_templates()
    assert set(report.dropped) == {template.name, *spares}
    assert not any(server.database_exists(name) for name in spares)
    assert _spares(pruner) == []


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_spare_dropped_by_hand_is_forgotten_and_replaced(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    first = make_provisioner()
    first.template(spec)
    first.keep_spare("worker")
    assert first.wait_warm(60)
    first.close()
    second = make_provisioner()
    (spare,) = _spares(second)
    server.drop_database(spare)

    second.template(spec)
    lease = second.clone("worker")
    assert lease.name != spare and server.database_exists(lease.name)
    assert spare not in [row.name for row in second.registry.databases()]
