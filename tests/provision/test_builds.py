"""Build safety: failures keep nothing, killed builders are cleaned up, one build at a time."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from sqlsandbox import ProvisioningError
from sqlsandbox.provision import Provisioner, TemplateSpec
from sqlsandbox.servers import Server

MakeProvisioner = Callable[..., Provisioner]
CHILD = Path(__file__).with_name("_child.py")

# A migration the tests control: it announces itself, counts its runs in a
# file, and (when told through the environment) waits for a line on stdin.
_BLOCKING_MIGRATION = """\
import os, sys
from sqlsandbox._urls import DatabaseURL
from sqlsandbox.provision._dbapi import connect, run_script

def migrate(url):
    with open(os.environ["COUNT_FILE"], "a") as fh:
        fh.write("run\\n")
    parsed = DatabaseURL.parse(url)
    conn = connect(parsed)
    run_script(conn, parsed.backend, "CREATE TABLE half (id INT)")
    conn.commit()
    conn.close()
    if os.environ.get("BLOCK_MIGRATION"):
        print("blocking", flush=True)
        sys.stdin.readline()
"""


def _child_url(server: Server) -> str:
    return server.url.render()


def _spawn(
    command: str,
    server: Server,
    registry: str,
    cache_dir: Path,
    root: Path,
    migrate: str,
    env: dict[str, str],
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, str(CHILD), command, _child_url(server), registry),
            *(str(cache_dir), str(root), migrate),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for *proc*, close its pipes; return its exit status and stderr."""
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    code = proc.wait(timeout=60)
    err = proc.stderr.read() if proc.stderr is not None else ""
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return code, err


def _lines(
    procs: list[subprocess.Popen[str]], *, release_on_exit: bool = False
) -> Iterator[tuple[int, str]]:
    """Yield (index, line) from the processes' stdout as lines arrive, until all close.

    With *release_on_exit*, the first process to end closes every stdin, so
    a sibling waiting for a line there is not left waiting for ever.
    """
    selector = selectors.DefaultSelector()
    for index, proc in enumerate(procs):
        assert proc.stdout is not None
        selector.register(proc.stdout, selectors.EVENT_READ, index)
    open_count = len(procs)
    while open_count:
        for key, _ in selector.select(timeout=60):
            stream: IO[str] = key.fileobj  # type: ignore[assignment]
            line = stream.readline()
            if not line:
                selector.unregister(stream)
                open_count -= 1
                if release_on_exit:
                    for proc in procs:
                        if proc.stdin is not None and not proc.stdin.closed:
                            proc.stdin.close()
                continue
            yield key.data, line.rstrip("\n")
    selector.close()


@pytest.fixture
def blocking_project(tmp_path: Path) -> tuple[Path, str, Path]:
    """A project whose migration is ``blocker:migrate``; returns (root, migrate, count file)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "blocker.py").write_text(_BLOCKING_MIGRATION)
    return root, "blocker:migrate", tmp_path / "count"


def test_sql_failure_names_the_file_and_the_error_and_keeps_nothing(
    make_provisioner: MakeProvisioner, server: Server, backend: str, tmp_path: Path
) -> None:
    folder = tmp_path / "sql"
    folder.mkdir()
    (folder / "001_ok.sql").write_text("CREATE TABLE fine (id INT);\n")
    (folder / "002_bad.sql").write_text("INSERT INTO missing_table VALUES (1);\n")
    provisioner = make_provisioner()
    spec = TemplateSpec(migrate="sql:sql", root=tmp_path)
    with pytest.raises(ProvisioningError) as caught:
        provisioner.template(spec)
    message = str(caught.value)
    assert f"Building the template for {server.url.masked()} failed in '002_bad.sql'" in message
    assert "missing_table" in message
    assert "Nothing was kept: the half-built template sqlsandbox_" in message
    fingerprint = provisioner._builder.fingerprint(spec)
    assert server.list_databases(f"sqlsandbox_{fingerprint.short}") == []
    assert provisioner.registry.databases(fingerprint=fingerprint.value) == []
    # Fixed, the next attempt builds.
    (folder / "002_bad.sql").write_text("CREATE TABLE missing_table (id INT);\n")
    assert provisioner.template(spec).built


def test_callable_failure_names_the_callable(
    make_provisioner: MakeProvisioner, tmp_path: Path, backend: str
) -> None:
    (tmp_path / "exploding.py").write_text(
        "def migrate(url):\n    raise RuntimeError('column \"x\" is broken')\n"
    )
    with pytest.raises(
        ProvisioningError,
        match=r"failed in 'migrate exploding:migrate' \(exploding:migrate\):\n"
        r"    RuntimeError: column \"x\" is broken",
    ):
        make_provisioner().template(TemplateSpec(migrate="exploding:migrate", root=tmp_path))


def test_seed_failure_names_the_seed_and_says_to_fix_it(
    make_provisioner: MakeProvisioner, tmp_path: Path, backend: str
) -> None:
    (tmp_path / "seeds.py").write_text("def users(url):\n    raise RuntimeError('no users')\n")
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "001.sql").write_text("CREATE TABLE users (id INT);\n")
    spec = TemplateSpec(migrate="sql:sql", seed="seeds:users", root=tmp_path)
    with pytest.raises(ProvisioningError) as caught:
        make_provisioner().template(spec)
    message = str(caught.value)
    assert "failed in 'seed seeds:users'" in message and "RuntimeError: no users" in message
    assert "Fix the seed function and run again" in message
    assert "Fix the migration" not in message


def test_killed_builder_leaves_a_half_build_the_next_run_replaces(
    make_provisioner: MakeProvisioner,
    server: Server,
    registry_name: str,
    cache_dir: Path,
    blocking_project: tuple[Path, str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, migrate, count = blocking_project
    child = _spawn(
        "build",
        server,
        registry_name,
        cache_dir,
        root,
        migrate,
        {"BLOCK_MIGRATION": "1", "COUNT_FILE": str(count)},
    )
    for _, line in _lines([child]):
        if line == "blocking":
            break
    child.kill()
    _finish(child)

    messages: list[str] = []
    provisioner = make_provisioner(on_progress=messages.append, lock_timeout=30)
    (half,) = provisioner.registry.databases(kind="tpl")
    assert half.state == "building"
    assert server.database_exists(half.name)

    monkeypatch.setenv("COUNT_FILE", str(count))
    template = provisioner.template(TemplateSpec(migrate=migrate, root=root))
    assert template.built and template.name != half.name
    assert f"dropping half-built template {half.name} left by a crashed run" in messages
    assert not server.database_exists(half.name)
    assert count.read_text().count("run") == 2


def test_two_processes_build_one_template_once(
    server: Server,
    backend: str,
    registry_name: str,
    tmp_path: Path,
    blocking_project: tuple[Path, str, Path],
) -> None:
    root, migrate, count = blocking_project
    # Separate cache directories (as on two machines): only the server-side lock
    # (for SQLite: the lock file in its directory) keeps them apart.
    dirs = [tmp_path / "a", tmp_path / "b"]
    env = {"BLOCK_MIGRATION": "1", "COUNT_FILE": str(count)}
    procs = [_spawn("build", server, registry_name, d, root, migrate, env) for d in dirs]
    ensuring: set[int] = set()
    blocked: int | None = None
    results: dict[int, str] = {}
    for index, line in _lines(procs):
        if line == "ensuring":
            ensuring.add(index)
        elif line == "blocking":
            assert blocked is None, "both processes ran the migration"
            blocked = index
        elif line.startswith("template "):
            results[index] = line
        stdin = procs[blocked].stdin if blocked is not None else None
        if ensuring == {0, 1} and stdin is not None and not stdin.closed:
            # Both are past "ensuring": the other one waits on the lock. Let the builder go.
            stdin.write("\n")
            stdin.close()
    for proc in procs:
        code, err = _finish(proc)
        assert code == 0, err
    assert count.read_text() == "run\n"
    names = {line.split()[1] for line in results.values()}
    assert len(names) == 1
    assert sorted(line.split()[2] for line in results.values()) == ["built=False", "built=True"]


def test_two_runs_share_a_server_without_collisions(
    server: Server, backend: str, registry_name: str, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    folder = root / "sql"
    folder.mkdir(parents=True)
    (folder / "001.sql").write_text("CREATE TABLE marks (run VARCHAR(40));\n")
    procs = [
        _spawn("run", server, registry_name, tmp_path / f"cache{i}", root, "sql:sql", {})
        for i in range(2)
    ]
    ready: dict[int, list[str]] = {}
    done: dict[int, list[str]] = {0: [], 1: []}
    for index, line in _lines(procs, release_on_exit=True):
        if line.startswith("ready "):
            ready[index] = line.split()[1:]
            if len(ready) == 2:
                # Both hold clones now; each reaps again and checks its own.
                for proc in procs:
                    assert proc.stdin is not None
                    if not proc.stdin.closed:
                        proc.stdin.write("\n")
                        proc.stdin.close()
        elif not line.startswith("progress"):
            done[index].append(line)
    for proc in procs:
        code, err = _finish(proc)
        assert code == 0, err
    assert done == {0: ["intact 3", "closed"], 1: ["intact 3", "closed"]}
    assert len(set(ready[0]) | set(ready[1])) == 6
    leftovers = [n for n in ready[0] + ready[1] if server.database_exists(n)]
    assert leftovers == []


def test_build_lock_timeout_says_who_holds_it(
    make_provisioner: MakeProvisioner,
    server: Server,
    registry_name: str,
    cache_dir: Path,
    blocking_project: tuple[Path, str, Path],
    backend: str,
) -> None:
    root, migrate, count = blocking_project
    child = _spawn(
        "build",
        server,
        registry_name,
        cache_dir,
        root,
        migrate,
        {"BLOCK_MIGRATION": "1", "COUNT_FILE": str(count)},
    )
    try:
        for _, line in _lines([child]):
            if line == "blocking":
                break
        provisioner = make_provisioner(lock_timeout=0.5)
        with pytest.raises(
            ProvisioningError,
            match=r"Timed out after 0.5s waiting for another process on this machine that is "
            r"building the template [0-9a-f]{12} \(blocker:migrate\).*--sqlsandbox-lock-timeout",
        ):
            provisioner.template(TemplateSpec(migrate=migrate, root=root))
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        code, err = _finish(child)
        assert code == 0, err


@pytest.mark.parametrize("backend", ["postgresql", "mariadb", "sqlite"])
def test_server_lock_without_timeout_waits_for_the_holder(
    make_provisioner: MakeProvisioner,
) -> None:
    import threading

    registry = make_provisioner().registry
    order: list[str] = []
    with registry.server_lock("k", timeout=None) as held:
        assert held
        # Another holder must wait, not fail at once (MariaDB's GET_LOCK(-1) would).
        with registry.server_lock("k", timeout=0) as other:
            assert not other
        with registry.server_lock("k", timeout=0.2) as other:
            assert not other
        started = threading.Event()

        def second() -> None:
            started.set()
            with registry.server_lock("k", timeout=None) as got:
                order.append(f"second {got}")

        thread = threading.Thread(target=second)
        thread.start()
        started.wait(10)
        order.append("first releases")
    thread.join(30)
    assert order == ["first releases", "second True"]
