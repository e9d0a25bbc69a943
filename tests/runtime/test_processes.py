"""Helper processes and in-thread servers: readiness without sleeps, sure teardown, output."""

from __future__ import annotations

import http.client
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from sqlsandbox.runtime import (
    ManagedProcess,
    ProcessStartError,
    ThreadServer,
    free_port,
    http_ok,
    log_line,
    port_open,
    release_port,
    start_process,
)
from sqlsandbox.runtime._processes import _PORT_DIR

from .conftest import write_ini

SERVER = textwrap.dedent(
    """
    import http.server, signal, sys
    port = int(sys.argv[1])
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on {port}", flush=True)
    server.serve_forever()
    """
)


def _get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize(
    "readiness",
    [
        pytest.param(lambda port: port_open(port), id="port"),
        pytest.param(lambda port: log_line(rf"listening on {port}"), id="log-line"),
        pytest.param(lambda port: http_ok(f"http://127.0.0.1:{port}/health"), id="http"),
    ],
)
def test_start_waits_until_ready_and_stop_ends_it(readiness) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    with start_process(
        [sys.executable, "-c", SERVER, str(port)], ready=readiness(port), name="web"
    ) as process:
        assert _get(port, "/health") == 200  # ready means ready: no retry needed
        assert process.returncode is None
    assert process.returncode == -signal.SIGTERM
    assert "listening on" in process.output_text()
    release_port(port)


def test_a_process_ignoring_sigterm_is_killed() -> None:
    port = free_port()
    process = start_process(
        [sys.executable, "-c", SERVER, str(port), "--ignore-term"],
        ready=log_line("listening"),
        stop_grace=0.2,
    )
    assert process.stop() == -signal.SIGKILL
    release_port(port)


def test_exit_before_ready_reports_status_and_output() -> None:
    code = "print('config file missing: /etc/app.toml'); raise SystemExit(3)"
    with pytest.raises(
        ProcessStartError,
        match=r"(?s)exited before it was ready .*exit status 3\. Fix: read the output below "
        r"for why it stopped, and fix the command.*\nlast output:\nconfig file missing",
    ):
        start_process([sys.executable, "-c", code], ready=port_open(free_port()), timeout=10)


def test_never_ready_times_out_and_is_stopped() -> None:
    code = "import threading; print('booting', flush=True); threading.Event().wait()"
    with pytest.raises(
        ProcessStartError,
        match=r"(?s)printed no line matching /ready/ in time\. Fix: if it is only slow, raise "
        r"timeout= \(now 0\.3 s\); check that the readiness probe log_line\('ready'\) "
        r"matches what it does .*\nlast output:\nbooting",
    ):
        start_process([sys.executable, "-c", code], ready=log_line("ready"), timeout=0.3)


def test_a_port_that_never_opens_names_the_probe() -> None:
    port = free_port()
    code = "import threading; threading.Event().wait()"
    try:
        with pytest.raises(
            ProcessStartError,
            match=rf"(?s)process python\S* was not ready: port 127\.0\.0\.1:{port} open within "
            rf"the timeout\. Fix: .*raise timeout= \(now 0\.3 s\); check that the readiness "
            rf"probe port_open\({port}, host='127\.0\.0\.1'\) matches .*\n\(no output\)",
        ):
            start_process([sys.executable, "-c", code], ready=port_open(port), timeout=0.3)
    finally:
        release_port(port)


def test_a_program_that_cannot_start_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(
        ProcessStartError,
        match=r"could not start process sqlsandbox-no-such-program .*No such file or directory"
        r".*\. Fix: check that 'sqlsandbox-no-such-program' is installed and spelled right on "
        r"PATH \(or pass its full path\)\.",
    ):
        start_process(["sqlsandbox-no-such-program"])
    script = tmp_path / "serve.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    with pytest.raises(
        ProcessStartError, match=r"Fix: '.*serve\.sh' is not executable by this user: chmod \+x"
    ):
        start_process([str(script)])
    with pytest.raises(
        ProcessStartError, match=r"Fix: cwd='.*nowhere' is not a directory; pass an existing one"
    ):
        start_process([sys.executable, "-c", "pass"], cwd=tmp_path / "nowhere")


def test_a_process_not_started_has_no_pid_and_says_so() -> None:
    process = ManagedProcess([sys.executable, "-c", "pass"], name="worker")
    with pytest.raises(RuntimeError, match=r"worker is not started, so it has no pid yet: call "):
        process.pid  # noqa: B018 - reading the property is the test


def test_free_ports_are_distinct_and_reserved_on_disk() -> None:
    ports = [free_port() for _ in range(30)]
    try:
        assert len(set(ports)) == 30
        for port in ports:
            assert (_PORT_DIR / str(port)).read_text() == str(os.getpid())
    finally:
        for port in ports:
            release_port(port)
    assert not any((_PORT_DIR / str(port)).exists() for port in ports)


def test_thread_server_serves_an_asgi_app() -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    with ThreadServer(app) as server:
        port = server.port
        assert _get(port, "/health") == 200
        assert "Application startup complete" in server.output_text()
    with pytest.raises(OSError):
        _get(port, "/health")


def test_failed_test_report_shows_process_output(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    pytester.makepyfile(
        """
        import sys
        from sqlsandbox.runtime import log_line

        CODE = (
            "import threading; print('worker booted, answer=42', flush=True); "
            "threading.Event().wait()"
        )

        def test_uses_a_process(sandbox_process):
            process = sandbox_process(
                [sys.executable, "-c", CODE], ready=log_line("booted"), name="worker"
            )
            assert process.returncode is None
            assert False, "the app misbehaved"

        def test_fixture_ports(free_tcp_port):
            assert 1024 < free_tcp_port < 65536
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*sqlsandbox: output of worker (call)*", "worker booted, answer=42"]
    )
