"""Start helper processes and in-thread servers for tests, and always stop them.

Readiness is checked by an open port, a log line or an HTTP health check;
between checks the helper waits on the process's exit (or the server
thread's end) with a growing timeout, so a helper that dies is noticed at
once and nothing sleeps blindly. Output is kept (the last lines) so the
pytest plugin can attach it to the report of a failed test. Ports come from
:func:`free_port`, which reserves them across xdist workers with lock files.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from .._exceptions import ConfigError, ProcessStartError

__all__ = [
    "ManagedProcess",
    "Readiness",
    "ThreadServer",
    "free_port",
    "http_ok",
    "log_line",
    "port_open",
    "release_port",
    "start_process",
]

_OUTPUT_LINES = 2000
_PORT_DIR = Path(tempfile.gettempdir()) / "sqlsandbox-ports"
_reserved: set[int] = set()
_reserved_lock = threading.Lock()


def _port_lock_stale(path: Path) -> bool:
    try:
        pid = int(path.read_text() or "0")
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return True
    if age > 3600:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port free on ``host`` and reserved for this process.

    The OS picks the port (bind to 0); a lock file in the temp directory then
    reserves it, so two xdist workers never get the same one even if the OS
    hands it out twice. Reservations end with the process or :func:`release_port`.
    """
    _PORT_DIR.mkdir(exist_ok=True)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        path = _PORT_DIR / str(port)
        with _reserved_lock:
            if port in _reserved:
                continue
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not _port_lock_stale(path):
                    continue
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            _reserved.add(port)
            return port
    raise ProcessStartError(
        f"no free TCP port on {host} after 50 tries; too many reserved in {_PORT_DIR}? "
        "Remove stale files there."
    )


def release_port(port: int) -> None:
    """Give a port reserved by :func:`free_port` back."""
    with _reserved_lock:
        if port in _reserved:
            _reserved.discard(port)
            with contextlib.suppress(OSError):
                (_PORT_DIR / str(port)).unlink()


@atexit.register
def _release_all_ports() -> None:
    for port in list(_reserved):
        release_port(port)


class _Target(Protocol):
    name: str
    timeout: float
    ready: Readiness | None

    def wait_exit(self, timeout: float) -> bool: ...

    def exit_description(self) -> str: ...

    def output_text(self) -> str: ...

    def wait_output(self, pattern: re.Pattern[str], timeout: float) -> bool: ...


class Readiness(Protocol):
    """How to know a helper is ready: ``wait`` returns when it is, raises when it cannot be."""

    def wait(self, target: _Target, deadline: float) -> None: ...


def _not_ready(
    target: _Target, what: str, timeout_at: float, *, exited: bool = False
) -> ProcessStartError:
    """Build the error of a helper that did not become ready, with its last output.

    *exited*: it ended by itself (its output says why), rather than running out of time.
    """
    tail = "\n".join(target.output_text().splitlines()[-30:])
    shown = f"\nlast output:\n{tail}" if tail else "\n(no output)"
    probe = repr(target.ready) if target.ready is not None else "its startup"
    if exited:
        fix = (
            "Fix: read the output below for why it stopped, and fix the command, its "
            f"environment or its configuration; check that the readiness probe {probe} "
            "waits for what the program really does."
        )
    else:
        fix = (
            f"Fix: if it is only slow, raise timeout= (now {target.timeout:g} s); check that "
            f"the readiness probe {probe} matches what it does (host, port, log pattern, "
            "health URL); the output below shows how far it got."
        )
    return ProcessStartError(f"{target.name} {what}. {fix}{shown}")


def _poll(target: _Target, deadline: float, ready: Any, what: str) -> None:
    """Call ``ready()`` until true; in between, wait on the target's exit with backoff."""
    delay = 0.005
    while True:
        if ready():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _not_ready(target, f"was not ready: {what} within the timeout", deadline)
        if target.wait_exit(min(delay, remaining)):
            raise _not_ready(
                target,
                f"exited before it was ready ({what}); {target.exit_description()}",
                deadline,
                exited=True,
            )
        delay = min(delay * 2, 0.2)


class port_open:
    """Ready when a TCP connection to ``host:port`` succeeds."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host

    def __repr__(self) -> str:
        return f"port_open({self.port}, host={self.host!r})"

    def _connects(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def wait(self, target: _Target, deadline: float) -> None:
        """Return once the port accepts connections."""
        _poll(target, deadline, self._connects, f"port {self.host}:{self.port} open")


class log_line:
    """Ready when a line of the helper's output matches ``pattern`` (a regex)."""

    def __init__(self, pattern: str | re.Pattern[str]) -> None:
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern

    def __repr__(self) -> str:
        return f"log_line({self.pattern.pattern!r})"

    def wait(self, target: _Target, deadline: float) -> None:
        """Return once the pattern shows up in the output (waits on the output, no polling)."""
        while True:
            remaining = deadline - time.monotonic()
            if target.wait_output(self.pattern, max(0.0, min(remaining, 0.2))):
                return
            if target.wait_exit(0):
                # The reader may still hold the last lines: one more look, then fail.
                if target.wait_output(self.pattern, 0.5):
                    return
                raise _not_ready(
                    target,
                    f"exited before printing a line matching /{self.pattern.pattern}/; "
                    f"{target.exit_description()}",
                    deadline,
                    exited=True,
                )
            if remaining <= 0:
                raise _not_ready(
                    target, f"printed no line matching /{self.pattern.pattern}/ in time", deadline
                )


class http_ok:
    """Ready when ``GET url`` answers with a status below 400 (or exactly ``status``)."""

    def __init__(self, url: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"http_ok needs an http(s) URL with a host, got {url!r}")
        self._parts = parts

    def __repr__(self) -> str:
        return f"http_ok({self.url!r})"

    def _answers(self) -> bool:
        parts = self._parts
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(parts.hostname or "", parts.port, timeout=2.0)
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            connection.request("GET", path)
            status = connection.getresponse().status
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
        return status == self.status if self.status is not None else status < 400

    def wait(self, target: _Target, deadline: float) -> None:
        """Return once the URL answers with a good status."""
        _poll(target, deadline, self._answers, f"GET {self.url} answering")


class _Output:
    """The last lines of a helper's output, with a condition to wait for a line."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES)
        self.condition = threading.Condition()
        self.total = 0

    def add(self, line: str) -> None:
        with self.condition:
            self.lines.append(line.rstrip("\n"))
            self.total += 1
            self.condition.notify_all()

    def text(self) -> str:
        with self.condition:
            return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        checked = 0
        with self.condition:
            while True:
                lines = list(self.lines)
                start = max(0, len(lines) - (self.total - checked))
                if any(pattern.search(line) for line in lines[start:]):
                    return True
                checked = self.total
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.condition.wait(remaining)


_started: list[weakref.ReferenceType[Any]] = []
_started_lock = threading.Lock()


def _remember(helper: Any) -> None:
    with _started_lock:
        _started.append(weakref.ref(helper))


def started_since(mark: int) -> list[Any]:
    """Helpers started after ``started_count()`` returned ``mark`` (for reports)."""
    with _started_lock:
        refs = _started[mark:]
    return [helper for helper in (ref() for ref in refs) if helper is not None]


def started_count() -> int:
    """How many helpers were started so far in this process."""
    with _started_lock:
        return len(_started)


class ManagedProcess:
    """An external process started for a test; stopped for sure (terminate, then kill)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        ready: Readiness | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        stop_grace: float = 5.0,
    ) -> None:
        self.argv = [os.fspath(arg) for arg in argv]
        self.name = name or f"process {Path(self.argv[0]).name}"
        self.ready = ready
        self.env = None if env is None else {**os.environ, **env}
        self.cwd = cwd
        self.timeout = timeout
        self.stop_grace = stop_grace
        self.process: subprocess.Popen[str] | None = None
        self._output = _Output()
        self._reader: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "not started" if self.process is None else f"pid {self.process.pid}"
        return f"<ManagedProcess {self.name!r} {state}>"

    @property
    def pid(self) -> int:
        """The process id (after :meth:`start`)."""
        if self.process is None:
            raise RuntimeError(
                f"{self.name} is not started, so it has no pid yet: call start() first, or use "
                "start_process(...) / 'with ManagedProcess(...) as process:', which start it."
            )
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while running."""
        return None if self.process is None else self.process.poll()

    def start(self) -> ManagedProcess:
        """Start the process and wait until it is ready; stop it again if it never is."""
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                env=self.env,
                cwd=self.cwd,
                # Its own process group, so stop() also reaches what it spawned.
                start_new_session=os.name == "posix",
            )
        except OSError as error:
            raise ProcessStartError(
                f"could not start {self.name} ({self.argv!r}): {error}. {self._start_fix(error)}"
            ) from None
        _remember(self)
        _live_processes.add(self)
        self._reader = threading.Thread(
            target=self._read, name=f"sqlsandbox-output-{self.name}", daemon=True
        )
        self._reader.start()
        if self.ready is not None:
            try:
                self.ready.wait(self, time.monotonic() + self.timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def _start_fix(self, error: OSError) -> str:
        """Return the fix for a program that could not be started."""
        program = self.argv[0] if self.argv else "(empty argv)"
        if self.cwd is not None and not Path(self.cwd).is_dir():
            return f"Fix: cwd={os.fspath(self.cwd)!r} is not a directory; pass an existing one."
        if isinstance(error, FileNotFoundError):
            where = "" if os.sep in program else " on PATH (or pass its full path)"
            return f"Fix: check that {program!r} is installed and spelled right{where}."
        if isinstance(error, PermissionError):
            return (
                f"Fix: {program!r} is not executable by this user: chmod +x it, or run it "
                "through its interpreter (for example [sys.executable, 'script.py'])."
            )
        return f"Fix: check that {program!r} can run on this machine."

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._output.add(line)

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; True if it has."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._reader is not None:
            # The pipe reaches EOF right after the exit (unless a child keeps it
            # open): let the reader take the last lines before anyone reports them.
            self._reader.join(1.0)
        return True

    def exit_description(self) -> str:
        """Say how the process ended."""
        code = self.returncode
        if code is None:
            return "still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def output_text(self) -> str:
        """The last lines the process printed (stdout and stderr together)."""
        return self._output.text()

    def wait_output(self, pattern: re.Pattern[str], timeout: float) -> bool:
        """Wait until a line matching ``pattern`` was printed; True if it was."""
        return self._output.wait_for(pattern, timeout)

    def _signal(self, sig: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.name == "posix":
                os.killpg(self.process.pid, sig)
            elif sig == getattr(signal, "SIGKILL", None):
                self.process.kill()
            else:
                self.process.terminate()

    def stop(self) -> int | None:
        """Terminate the process and its group, kill after ``stop_grace``; return its status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            if not self.wait_exit(self.stop_grace):
                self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
                self.wait_exit(self.stop_grace)
        elif os.name == "posix":
            # The leader is gone; children it left in its group must go too.
            self._signal(signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(self.stop_grace)
        if self.process.stdout is not None:
            self.process.stdout.close()
        _live_processes.discard(self)
        return self.process.returncode

    def __enter__(self) -> ManagedProcess:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_live_processes: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for process in list(_live_processes):
        with contextlib.suppress(Exception):
            process.stop()


def start_process(
    argv: Sequence[str],
    *,
    ready: Readiness | None = None,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
    stop_grace: float = 5.0,
) -> ManagedProcess:
    """Start ``argv`` and wait until ``ready`` says so; use as a context manager or call ``stop()``.

    ``ready`` is :class:`port_open`, :class:`log_line`, :class:`http_ok` or
    None (started is enough). ``env`` adds to the current environment.
    """
    return ManagedProcess(
        argv, name=name, ready=ready, env=env, cwd=cwd, timeout=timeout, stop_grace=stop_grace
    ).start()


class ThreadServer:
    """Serve an ASGI app with uvicorn in a thread of this process, on a free port.

    Ready when uvicorn finished its startup (lifespan included), or, with
    ``ready=``, when that check passes too. Stopped with uvicorn's graceful
    exit, then its forced exit, within ``stop_grace``.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        name: str | None = None,
        ready: Readiness | None = None,
        timeout: float = 30.0,
        stop_grace: float = 5.0,
        **uvicorn_options: Any,
    ) -> None:
        try:
            import uvicorn
        except ImportError:
            raise ConfigError(
                "serving an app in a thread needs the 'uvicorn' package, which is not "
                "installed. Install it with: pip install uvicorn"
            ) from None
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.name = name or f"uvicorn server on {host}:{self.port}"
        self.ready = ready
        self.timeout = timeout
        self.stop_grace = stop_grace
        self._output = _Output()
        self._started = threading.Event()
        self._error: BaseException | None = None
        # log_config=None: leave the test process's logging alone; our handler keeps the lines.
        options = {"log_level": "info", "log_config": None, "lifespan": "auto", **uvicorn_options}
        config = uvicorn.Config(app, host=host, port=self.port, **options)
        started = self._started

        class _Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets=sockets)
                started.set()

            def install_signal_handlers(self) -> None:
                # A server in a thread must leave the test process's signals alone.
                pass

        self.server = _Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"sqlsandbox-{self.name}", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL of the server, like ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        import logging

        handler = _OutputHandler(self._output)
        loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.access")]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            self.server.run()
        except BaseException as error:  # reported by start(), never lost in the thread
            self._error = error
        finally:
            for logger in loggers:
                logger.removeHandler(handler)

    def start(self) -> ThreadServer:
        """Start serving and wait until ready; stop again if it never is."""
        _remember(self)
        self._thread.start()
        deadline = time.monotonic() + self.timeout
        try:
            while not self._started.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                if not self._thread.is_alive():
                    raise _not_ready(
                        self,
                        f"stopped during startup; {self.exit_description()}",
                        deadline,
                        exited=True,
                    )
                if time.monotonic() >= deadline:
                    raise _not_ready(self, "did not finish startup in time", deadline)
            if self.ready is not None:
                self.ready.wait(self, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the server thread to end; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def exit_description(self) -> str:
        """Say why the server thread ended."""
        if self._thread.is_alive():
            return "still running"
        if self._error is not None:
            return f"it raised {type(self._error).__name__}: {self._error}"
        return "uvicorn exited (port in use? lifespan startup failed? see the output)"

    def output_text(self) -> str:
        """The server's log lines."""
        return self._output.text()

    def wait_output(self, pattern: re.Pattern[str], timeout: float) -> bool:
        """Wait until a log line matching ``pattern`` appeared; True if it did."""
        return self._output.wait_for(pattern, timeout)

    def stop(self) -> None:
        """Ask uvicorn to exit, force it after ``stop_grace``, join the thread, free the port."""
        if self._thread.is_alive():
            self.server.should_exit = True
            self._thread.join(self.stop_grace)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(self.stop_grace)
        release_port(self.port)

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _OutputHandler:
    """A logging handler writing into an _Output (duck-typed to avoid a logging subclass here)."""

    def __new__(cls, output: _Output) -> Any:
        import logging

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                with contextlib.suppress(Exception):
                    output.add(self.format(record))

        handler = Handler(level=logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        return handler
