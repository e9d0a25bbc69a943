"""``sqlsandbox templates ls|prune`` and ``sqlsandbox reap`` on a real server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sqlsandbox._urls import DatabaseURL
from sqlsandbox.cli import main
from sqlsandbox.provision import Provisioner, TemplateSpec, make_name
from sqlsandbox.provision._registry import Owner
from sqlsandbox.servers import connect_server

from .conftest import write_sql_project


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def test_templates_ls_prune_and_reap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'dbs'}"
    server = connect_server(url)
    write_sql_project(tmp_path, "sqlite")
    provisioner = Provisioner(server, cache_dir=tmp_path / "cache", warm={})
    template = provisioner.template(TemplateSpec(migrate="sql:sql", root=tmp_path))
    provisioner.acquire("test")

    code, out = _run(capsys, "--url", url, "templates", "ls")
    assert code == 0
    lines = out.splitlines()
    header = "NAME STATE SOURCE BUILD LAST USED CLONES LIVE RUNS"
    assert lines[1].split() == header.split()
    row = lines[2].split()
    assert row[:3] == [template.name, "ready", "sql:sql"]
    assert row[-2:] == ["1", "1"]  # one clone, one live run

    code, out = _run(capsys, "--url", url, "templates", "ls", "--json")
    (entry,) = json.loads(out)
    assert (entry["name"], entry["live_runs"], entry["exists"]) == (template.name, 1, True)

    # A template a live run uses is never pruned.
    code, out = _run(capsys, "--url", url, "templates", "prune")
    assert (code, out.splitlines()[-1].startswith("dropped 0 template(s)")) == (0, True)
    provisioner.close()

    code, out = _run(capsys, "--url", url, "templates", "prune", "--dry-run")
    assert f"would drop {template.name}" in out and server.database_exists(template.name)
    code, out = _run(capsys, "--url", url, "templates", "prune")
    assert f"dropped {template.name}" in out and not server.database_exists(template.name)

    # A dead process's clone (this host, pid gone) is reaped.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    from sqlsandbox.provision import Registry

    registry = Registry(server).open()
    owner = Owner(uuid.uuid4().hex, "dead-run", socket.gethostname(), dead.pid, 0.0)
    registry.add_owner(owner)
    name = make_name("ab" * 32, "worker")
    registry.add_database(
        name, fingerprint="ab" * 32, kind="worker", state="clone", owner_id=owner.owner_id
    )
    server.create_database(name)
    registry.close()
    code, out = _run(capsys, "--url", url, "reap", "--dry-run")
    assert f"would drop {name}" in out and server.database_exists(name)
    code, out = _run(capsys, "--url", url, "reap")
    assert code == 0
    assert out.splitlines() == [
        f"dropped {name}",
        f"dropped 1 database(s) of 1 dead run process(es) on {server.url.masked()}",
    ]
    assert not server.database_exists(name)


def test_commands_on_a_server_sqlsandbox_never_used_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'empty'}"
    for argv in (["templates", "ls"], ["templates", "prune"], ["reap"]):
        code, out = _run(capsys, "--url", url, *argv)
        assert (code, out.strip()) == (0, f"sqlsandbox: no sqlsandbox databases on {url}.")
    assert not (tmp_path / "empty").exists()


def test_ls_never_prints_the_password(
    postgres_admin_url: DatabaseURL, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test server trusts local logins, so any password gets in: it must not show.
    url = postgres_admin_url.replace(password="hunter2-secret").render()
    code, out = _run(capsys, "--url", url, "templates", "ls")
    assert code == 0
    assert "hunter2-secret" not in out
    assert "postgres:***@" in out


def test_prune_with_a_negative_keep_says_what_keep_means(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--url", f"sqlite:///{tmp_path / 'dbs'}", "templates", "prune", "--keep", "-1"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip() == (
        "sqlsandbox: error: --keep must be 0 or more, not -1: it is how many unused templates "
        "of each project to keep (0 drops them all)."
    )
