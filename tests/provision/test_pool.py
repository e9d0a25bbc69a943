"""Clones, leases, the warm pool and the budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sqlsandbox import ConfigError, ProvisioningError
from sqlsandbox.provision import Budget, Provisioner, TemplateSpec, parse_name
from sqlsandbox.servers import Server

from .conftest import query, write_sql_project

MakeProvisioner = Callable[..., Provisioner]


@pytest.fixture
def spec(tmp_path: Path, backend: str) -> TemplateSpec:
    """A template with the two-table SQL project of the backend under test."""
    write_sql_project(tmp_path, backend)
    return TemplateSpec(migrate="sql:sql", root=tmp_path)


def test_warm_pool_hands_out_ready_clones_and_refills(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner()
    provisioner.template(spec)
    provisioner.prewarm("test", 2)
    assert provisioner.wait_warm(60)
    (stats,) = provisioner.stats()
    assert (stats.ready, stats.created) == (2, 2)

    lease = provisioner.acquire("test")
    (stats,) = provisioner.stats()
    assert (stats.hits, stats.misses, stats.ready) == (1, 0, 1)
    assert parse_name(lease.name) is not None and parse_name(lease.name).kind == "test"  # type: ignore[union-attr]
    assert query(lease.url, "SELECT count(*) FROM users") == [(2,)]
    query(lease.url, "DELETE FROM orders")
    query(lease.url, "DELETE FROM users")

    lease.release()
    lease.release()  # idempotent
    assert provisioner.wait_warm(60)
    (stats,) = provisioner.stats()
    # The used clone was dropped and a fresh one made in the background.
    assert (stats.ready, stats.created, stats.dropped) == (2, 3, 1)
    assert not server.database_exists(lease.name)
    with provisioner.acquire("test") as fresh:
        assert query(fresh.url, "SELECT count(*) FROM users") == [(2,)]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_empty_pool_grows_within_max_warm(
    make_provisioner: MakeProvisioner, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner(warm={"test": 1}, max_warm=2)
    provisioner.template(spec)
    first = provisioner.acquire("test")  # nothing ready yet: a miss
    assert provisioner.wait_warm(60)
    (stats,) = provisioner.stats()
    assert (stats.misses, stats.target, stats.ready) == (1, 2, 2)
    second, third = provisioner.acquire("test"), provisioner.acquire("test")
    (stats,) = provisioner.stats()
    assert (stats.hits, stats.misses) == (2, 1)
    fourth = provisioner.acquire("test")  # empty again: a miss, but max_warm caps growth
    (stats,) = provisioner.stats()
    assert (stats.misses, stats.target) == (2, 2)
    assert len({first.name, second.name, third.name, fourth.name}) == 4


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_worker_clone_is_made_on_demand_without_spares(
    make_provisioner: MakeProvisioner, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner()
    provisioner.template(spec)
    lease = provisioner.acquire("worker")
    assert provisioner.wait_warm(60)
    (stats,) = provisioner.stats()
    assert (stats.kind, stats.target, stats.created, stats.ready) == ("worker", 0, 1, 0)
    assert query(lease.url, "SELECT count(*) FROM orders") == [(0,)]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_recycled_clone_is_handed_out_again(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner(warm={})
    provisioner.template(spec)
    lease = provisioner.acquire("module")
    lease.release(recycle=True)
    again = provisioner.acquire("module")
    assert again.name == lease.name
    assert server.database_exists(again.name)


def test_clone_bypasses_the_pool_and_close_drops_everything(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner()
    template = provisioner.template(spec)
    direct = provisioner.clone("class")
    pooled = provisioner.acquire("test")
    assert server.database_exists(direct.name) and server.database_exists(pooled.name)
    provisioner.close()
    assert not server.database_exists(direct.name)
    assert not server.database_exists(pooled.name)
    assert server.database_exists(template.name)
    with pytest.raises(ProvisioningError, match=r"is closed; create a new Provisioner"):
        provisioner.acquire("test")


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_acquire_beyond_the_database_budget_waits_then_says_what_to_change(
    make_provisioner: MakeProvisioner, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner(budget=Budget(max_databases=3), warm={})
    provisioner.template(spec)
    first = provisioner.acquire("test")
    provisioner.acquire("test")
    with pytest.raises(
        ProvisioningError,
        match=r"Waited 0.3s for a clone of template sqlsandbox_\w+ \(test\) .* this process "
        r"holds 2 of its 2 databases \(2 leased and not released\)\. Release leases .* "
        r"--sqlsandbox-max-databases",
    ):
        provisioner.acquire("test", timeout=0.3)
    first.release()
    # The released clone is dropped to make room, then a new one is made.
    third = provisioner.acquire("test", timeout=60)
    assert third.name != first.name


def test_budget_too_small_for_the_workers_says_what_to_change(server: Server) -> None:
    with pytest.raises(
        ProvisioningError,
        match=r"max_databases = 3 is too small for 2 worker\(s\) on .*: each worker needs at "
        r"least 2 databases .* Raise --sqlsandbox-max-databases \(SQLSANDBOX_MAX_DATABASES\) "
        r"to at least 5, or run fewer workers \(-n 1 fits\)\.",
    ):
        Budget(max_databases=3, workers=2).check(server)


def test_connection_budget_names_the_numbers_and_the_fixes(server: Server, backend: str) -> None:
    limit = server.max_connections()
    plan = Budget(workers=2).check(server, in_use=10)
    assert plan.connections_needed == 18
    if backend == "sqlite":
        return  # no connection limit to exceed
    workers = limit // 9 + 1
    fits = (limit - 5 - 10) // 9
    with pytest.raises(
        ProvisioningError,
        match=rf"Not enough connections on .* for {workers} worker\(s\): the server allows "
        rf"{limit} \(max_connections\), 10 are in use and 5 are kept in reserve, which leaves "
        rf"{limit - 15}; {workers} workers need {workers} x 9 = {workers * 9} \(4 for the "
        rf"app, 5 for sqlsandbox\)\. Run fewer workers \(-n {fits} fits\), lower "
        r"--sqlsandbox-connections-per-worker",
    ):
        Budget(workers=workers).check(server, in_use=10)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_acquire_without_a_template_and_bad_kinds_fail_clearly(
    make_provisioner: MakeProvisioner,
) -> None:
    provisioner = make_provisioner()
    with pytest.raises(ProvisioningError, match=r"No template yet: call Provisioner.template"):
        provisioner.acquire("test")
    with pytest.raises(ConfigError, match=r"Invalid clone kind 'Per-Test'"):
        provisioner.acquire("Per-Test")


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgres_template_refuses_connections(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    template = make_provisioner().template(spec)
    # Nobody can sit on the template, so cloning never meets "other users".
    assert server.execute(
        "SELECT datallowconn FROM pg_database WHERE datname = %s", (template.name,)
    ) == [(False,)]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgres_template_and_file_copy_clones_carry_the_relation_cache_file(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    # Without it, the first connection to every clone rebuilds it (3-7 ms of server CPU).
    # PostgreSQL 15 keeps the file of the build's last session anyway; 18 did not.
    provisioner = make_provisioner()
    template = provisioner.template(spec)
    init_file = (
        "SELECT (pg_stat_file(format('base/%%s/pg_internal.init', oid), true)).size "
        "FROM pg_database WHERE datname = %s"
    )
    assert (server.execute(init_file, (template.name,))[0][0] or 0) > 0
    if server.version_info() >= (15,):  # type: ignore[attr-defined]
        server.clone_strategy = "file_copy"  # type: ignore[attr-defined]
        lease = provisioner.clone("test")
        assert (server.execute(init_file, (lease.name,))[0][0] or 0) > 0


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_registry_reconnects_after_its_connection_was_killed(
    make_provisioner: MakeProvisioner, server: Server, registry_name: str
) -> None:
    provisioner = make_provisioner()
    provisioner.registry.owners()
    # As a server restart or an admin's pg_terminate_backend would.
    assert server.terminate_connections(registry_name) >= 1
    assert [o.owner_id for o in provisioner.registry.owners()] == [provisioner.owner.owner_id]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgres_clones_commit_without_waiting_for_the_wal_flush(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    # A clone is thrown away after its test or run: durability across a server crash
    # buys nothing there, and on a server with fsync on each COMMIT would wait 1-10 ms.
    provisioner = make_provisioner()
    provisioner.template(spec)
    provisioner.prewarm("test", 1)
    assert provisioner.wait_warm(60)
    with provisioner.acquire("test") as warm, provisioner.clone("worker") as direct:
        for lease in (warm, direct):
            assert query(lease.url, "SHOW synchronous_commit") == [("off",)]
    # The server's own default is untouched: only sqlsandbox's clones carry the setting.
    assert server.execute("SHOW synchronous_commit") == [("on",)]
