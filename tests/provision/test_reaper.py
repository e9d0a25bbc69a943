"""Cleanup: dead runs are reaped, live runs and user databases are never touched."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sqlsandbox.provision import Provisioner, TemplateSpec, make_name
from sqlsandbox.provision._registry import Owner
from sqlsandbox.servers import Server

from .conftest import write_sql_project
from .test_builds import CHILD, _finish, _lines

MakeProvisioner = Callable[..., Provisioner]


@pytest.fixture
def spec(tmp_path: Path, backend: str) -> TemplateSpec:
    """A template with the two-table SQL project of the backend under test."""
    write_sql_project(tmp_path, backend)
    return TemplateSpec(migrate="sql:sql", root=tmp_path)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def _fake_owner(provisioner: Provisioner, *, host: str, pid: int) -> Owner:
    owner = Owner(
        owner_id=uuid.uuid4().hex, run_id="other-run", host=host, pid=pid, pid_started=0.0
    )
    provisioner.registry.add_owner(owner)
    return owner


def _owned_clone(provisioner: Provisioner, owner: Owner) -> str:
    template = provisioner._default
    assert template is not None
    name = make_name(template.fingerprint.value, "test")
    provisioner.registry.add_database(
        name, fingerprint=template.fingerprint.value, kind="test", state="clone",
        owner_id=owner.owner_id,
    )  # fmt: skip
    provisioner.server.clone_database(name, template.name)
    return name


def test_reap_drops_what_a_dead_process_left_behind(
    make_provisioner: MakeProvisioner,
    server: Server,
    registry_name: str,
    spec: TemplateSpec,
    tmp_path: Path,
) -> None:
    child = subprocess.Popen(
        [
            *(sys.executable, str(CHILD), "leak", server.url.render(), registry_name),
            *(str(tmp_path / "cache"), str(spec.root), "sql:sql"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    leaked: list[str] = []
    for _, line in _lines([child]):
        if line.startswith("leaked "):
            leaked = line.split()[1:]
    code, err = _finish(child)
    assert code == 0, err
    assert len(leaked) == 3 and all(server.database_exists(n) for n in leaked)

    provisioner = make_provisioner()
    template = provisioner.template(spec)
    report = provisioner.reap()
    assert sorted(report.dropped) == sorted(leaked)
    assert len(report.owners_removed) == 1
    assert not any(server.database_exists(n) for n in leaked)
    # The complete template is the cache: reaping keeps it.
    assert server.database_exists(template.name)


def test_reap_spares_live_runs_and_drops_stale_remote_ones(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner()
    provisioner.template(spec)
    mine = provisioner.acquire("test")
    fresh_remote = _fake_owner(provisioner, host="build-agent-7", pid=1)
    stale_remote = _fake_owner(provisioner, host="build-agent-8", pid=1)
    dead_local = _fake_owner(provisioner, host=socket.gethostname(), pid=_dead_pid())
    fresh_db = _owned_clone(provisioner, fresh_remote)
    stale_db = _owned_clone(provisioner, stale_remote)
    dead_db = _owned_clone(provisioner, dead_local)
    provisioner.registry.set_heartbeat_at(stale_remote.owner_id, 3600)

    report = make_provisioner().reap()
    assert sorted(report.dropped) == sorted([stale_db, dead_db])
    assert sorted(report.owners_removed) == sorted([stale_remote.owner_id, dead_local.owner_id])
    assert server.database_exists(mine.name)
    assert server.database_exists(fresh_db)
    assert not server.database_exists(stale_db) and not server.database_exists(dead_db)


def test_databases_sqlsandbox_did_not_register_survive_reap_and_prune(
    make_provisioner: MakeProvisioner, server: Server, backend: str, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner()
    provisioner.template(spec)
    # Our prefix but no registry entry (another tool's, or a test fixture's).
    unregistered = f"sqlsandbox_{uuid.uuid4().hex[:12]}"
    server.create_database(unregistered)
    # No prefix at all, even with a registry row claiming it for a dead run.
    if backend == "postgresql":
        user_db = "postgres"
    elif backend == "mariadb":
        user_db = "mysql"
    else:
        user_db = "userdata"
        path = Path(str(server.database_url("x").database)).with_name("userdata.sqlite3")
        sqlite3.connect(path).close()
    dead = _fake_owner(provisioner, host=socket.gethostname(), pid=_dead_pid())
    provisioner.registry.add_database(
        user_db, fingerprint="0" * 64, kind="test", state="clone", owner_id=dead.owner_id
    )
    try:
        provisioner.reap()
        provisioner.prune_templates()
        make_provisioner().close()  # closing reaps too
        assert server.database_exists(unregistered)
        assert server.database_exists(user_db)
    finally:
        provisioner.registry.remove_database(user_db)
        server.drop_database(unregistered)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_prune_drops_unused_templates_but_keeps_the_newest_when_asked(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec, tmp_path: Path
) -> None:
    names = []
    for round_ in range(3):
        (tmp_path / "sql" / "009_round.sql").write_text(f"CREATE TABLE r{round_} (x INT);\n")
        run = make_provisioner(keep_templates=5)
        names.append(run.template(spec).name)
        run.close()
    assert all(server.database_exists(n) for n in names)
    pruner = make_provisioner()
    assert sorted(pruner.prune_templates(keep=1, dry_run=True).dropped) == sorted(names[:2])
    assert all(server.database_exists(n) for n in names)
    assert sorted(pruner.prune_templates(keep=1).dropped) == sorted(names[:2])
    assert [server.database_exists(n) for n in names] == [False, False, True]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_heartbeat_keeps_a_remote_looking_owner_alive(
    make_provisioner: MakeProvisioner, spec: TemplateSpec
) -> None:
    provisioner = make_provisioner(heartbeat_interval=0.05)
    owner = provisioner.owner
    provisioner.registry.set_heartbeat_at(owner.owner_id, 3600)
    before = {o.owner_id: o.heartbeat_at for o in provisioner.registry.owners()}[owner.owner_id]
    provisioner._beaten.clear()
    assert provisioner._beaten.wait(30)
    after = {o.owner_id: o.heartbeat_at for o in provisioner.registry.owners()}[owner.owner_id]
    assert after > before + 3000
