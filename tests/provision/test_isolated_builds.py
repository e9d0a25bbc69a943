"""Builds in a child process (``isolated_builds=True``, what the pytest plugin uses).

The project's code runs there, so nothing it imports or sets stays here; the
outcome comes back as it would from a build in this process: progress lines,
the failing step with its error, the same exception classes.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sqlsandbox import ConfigError, ProvisioningError
from sqlsandbox.provision import Provisioner, TemplateSpec
from sqlsandbox.servers import Server

from .conftest import query, write_sql_project

MakeProvisioner = Callable[..., Provisioner]
CHILD = Path(__file__).with_name("_child.py")

SEED = """
import os
from sqlsandbox._urls import DatabaseURL
from sqlsandbox.provision._dbapi import connect, run_script

# Set at import: it must not reach the process that asked for the template.
os.environ["SQLSANDBOX_TEST_SEED_IMPORTED"] = str(os.getpid())


def seed(url):
    print("a print in the seed never breaks the build")
    parsed = DatabaseURL.parse(url)
    conn = connect(parsed)
    run_script(conn, parsed.backend, "INSERT INTO users (id, name) VALUES (40, 'linus')")
    conn.commit()
    conn.close()
"""


def _module(root: Path, body: str) -> str:
    name = f"iso_{uuid.uuid4().hex[:10]}"
    (root / f"{name}.py").write_text(body)
    return name


def test_the_build_runs_elsewhere_and_reports_here(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    module = _module(tmp_path, SEED)
    messages: list[str] = []
    provisioner = make_provisioner(on_progress=messages.append, isolated_builds=True)
    template = provisioner.template(
        TemplateSpec(migrate="sql:sql", seed=f"{module}:seed", root=tmp_path)
    )
    assert template.built
    assert module not in sys.modules
    assert "SQLSANDBOX_TEST_SEED_IMPORTED" not in os.environ
    prefix = f"template {template.name}: "
    assert f"{prefix}running migration 2/2: 002_orders.sql" in messages
    assert f"{prefix}running seed {module}:seed" in messages
    with provisioner.acquire("test") as lease:
        assert query(lease.url, "SELECT name FROM users ORDER BY id") == [
            ("ada",),
            ("grace",),
            ("linus",),
        ]
        # Sequences are moved past the seeded ids, as after a build in this process.
        query(lease.url, "INSERT INTO users (name) VALUES ('new')")
        assert query(lease.url, "SELECT max(id) FROM users") == [(41,)]


def test_a_failing_step_is_named_with_its_error_and_nothing_is_kept(
    make_provisioner: MakeProvisioner, server: Server, tmp_path: Path
) -> None:
    module = _module(
        tmp_path,
        "def migrate(url):\n    raise RuntimeError('column \"x\" is broken')\n",
    )
    provisioner = make_provisioner(isolated_builds=True)
    with pytest.raises(
        ProvisioningError,
        match=rf"failed in 'migrate {module}:migrate' \({module}:migrate\):\n"
        r"    RuntimeError: column \"x\" is broken\nNothing was kept",
    ) as caught:
        provisioner.template(TemplateSpec(migrate=f"{module}:migrate", root=tmp_path))
    # The child's traceback travels along, for the line that raised.
    cause = caught.value.__cause__
    assert cause is not None
    assert any("raise RuntimeError" in note for note in getattr(cause, "__notes__", []))
    assert provisioner.registry.databases(kind="tpl") == []
    assert not [name for name in server.list_databases() if "_tpl_" in name and module in name]


def test_a_config_error_comes_back_as_itself(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path
) -> None:
    write_sql_project(tmp_path, backend)
    module = _module(tmp_path, "seed = 42\n")
    with pytest.raises(ConfigError, match=rf"seed = '{module}:seed' does not name a callable"):
        make_provisioner(isolated_builds=True).template(
            TemplateSpec(migrate="sql:sql", seed=f"{module}:seed", root=tmp_path)
        )


def test_a_build_process_that_dies_says_so(
    make_provisioner: MakeProvisioner, backend: str, tmp_path: Path
) -> None:
    module = _module(
        tmp_path,
        "import os, sys\ndef migrate(url):\n"
        "    print('about to die', file=sys.stderr, flush=True)\n    os._exit(7)\n",
    )
    with pytest.raises(
        ProvisioningError, match=r"exited with code 7 before it finished; .*\n    about to die"
    ):
        make_provisioner(isolated_builds=True).template(
            TemplateSpec(migrate=f"{module}:migrate", root=tmp_path)
        )


# A migration that says where it runs (through a FIFO the test reads), then
# waits for ever on another FIFO nobody writes to.
_STUCK_MIGRATION = """
import os

def migrate(url):
    with open(os.environ["READY_FIFO"], "w") as ready:
        ready.write(str(os.getpid()))
    with open(os.environ["STUCK_FIFO"]) as stuck:
        stuck.read()
"""


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="waits on a pidfd (Linux 5.3+)")
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_killed_run_takes_its_build_process_along(
    server: Server, registry_name: str, cache_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "stuck.py").write_text(_STUCK_MIGRATION)
    ready, stuck = tmp_path / "ready.fifo", tmp_path / "stuck.fifo"
    os.mkfifo(ready)
    os.mkfifo(stuck)
    args = [str(CHILD), "build", server.url.render(), registry_name, str(cache_dir)]
    run = subprocess.Popen(
        [sys.executable, *args, str(root), "stuck:migrate"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env={
            **os.environ,
            "ISOLATED_BUILDS": "1",
            "READY_FIFO": str(ready),
            "STUCK_FIFO": str(stuck),
        },
    )
    try:
        with open(ready) as fifo:  # returns once the build process opened it
            builder = int(fifo.read())
        assert builder != run.pid
        pidfd = os.pidfd_open(builder)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    try:
        # Readable when the process has ended: no polling, no sleep.
        readable, _, _ = select.select([pidfd], [], [], 60)
        assert readable, f"build process {builder} outlived the run that started it"
    finally:
        os.close(pidfd)
