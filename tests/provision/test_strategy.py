"""CREATE DATABASE's strategy, measured once per server and remembered."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from sqlsandbox.provision import Provisioner, TemplateSpec
from sqlsandbox.provision._strategy import PROBE_ROUNDS, STRATEGIES
from sqlsandbox.servers import Server

from .conftest import query, write_sql_project

MakeProvisioner = Callable[..., Provisioner]


@pytest.fixture
def spec(tmp_path: Path) -> TemplateSpec:
    write_sql_project(tmp_path, "postgresql")
    return TemplateSpec(migrate="sql:sql", root=tmp_path)


def _postgres_15(server: Server) -> None:
    if int(server.execute("SHOW server_version_num")[0][0]) < 150000:
        pytest.skip("CREATE DATABASE ... STRATEGY needs PostgreSQL 15 or later")


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_strategy_is_measured_once_then_read_from_the_cache(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec, cache_dir: Path
) -> None:
    _postgres_15(server)
    first = make_provisioner(choose_strategy=True)
    first.template(spec)
    (record,) = [json.loads(p.read_text()) for p in (cache_dir / "clone-strategy").iterdir()]
    assert record["strategy"] in STRATEGIES
    assert set(record["best_ms"]) == set(STRATEGIES)
    assert server.clone_strategy == record["strategy"]  # type: ignore[attr-defined]
    # The probes were ordinary clones, dropped again: the next clone still works.
    assert first.wait_warm(60)
    (probes,) = [s for s in first.stats() if s.kind == "probe"]
    assert (probes.leased, probes.dropped) == (0, 2 * PROBE_ROUNDS)
    lease = first.clone("test")
    assert query(lease.url, "SELECT count(*) FROM users") == [(2,)]
    lease.release()

    # Another process (a worker, the next run) reads the answer: no clone made to measure.
    server.clone_strategy = None  # type: ignore[attr-defined]
    second = make_provisioner(choose_strategy=True)
    second.template(spec)
    assert [s for s in second.stats() if s.kind == "probe"] == []
    assert server.clone_strategy == record["strategy"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_strategy_the_user_set_is_kept(
    make_provisioner: MakeProvisioner, server: Server, spec: TemplateSpec, cache_dir: Path
) -> None:
    _postgres_15(server)
    server.clone_strategy = "file_copy"  # type: ignore[attr-defined]
    provisioner = make_provisioner(choose_strategy=True)
    provisioner.template(spec)
    assert server.clone_strategy == "file_copy"  # type: ignore[attr-defined]
    assert not (cache_dir / "clone-strategy").exists()
    assert [s for s in provisioner.stats() if s.kind == "probe"] == []
