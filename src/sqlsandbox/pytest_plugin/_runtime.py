"""pytest side of the runtime layer: virtual time, leak checks, timeouts with a dump, no_sleep.

- Async tests (pytest-asyncio in strict or auto mode, any loop scope, and
  anyio's plugin) run through a thin async wrapper put in place of the test
  function for the call phase. It switches virtual time on, watches the
  tasks the test creates, and turns a timeout's cancellation into a failure
  that shows where every task waits.
- After each test: tasks it left pending (async tests), threads it started
  and did not join, and resources registered checks report. At the end of
  each pytest-asyncio loop scope: tasks still pending on that loop.
- The per-test timeout is a SIGALRM timer. If pytest-timeout is active for a
  test, its timer hooks are implemented here instead (its value, its mark),
  so there is one timer and its failure carries the async dump.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..runtime import _processes
from ..runtime._hangs import dump_tasks, dump_threads
from ..runtime._leaks import (
    LeakReport,
    cancel_and_collect,
    find_task_leaks,
    find_thread_leaks,
    run_leak_checks,
    task_allowed,
)
from ..runtime._processes import ManagedProcess, Readiness, ThreadServer, free_port, release_port
from ..runtime._tasks import task_tracker
from ..runtime._virtual_time import current_clock, virtual_time
from ._loop_end import note_call_ended

__all__ = ["SandboxLeakWarning", "runtime_settings"]

_LEAK_MODES = ("fail", "cancel", "warn", "off")
# Our own files: their sleeps (none today) are never the test's doing.
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


class SandboxLeakWarning(UserWarning):
    """A test left tasks, threads or resources behind (``leaks = "warn"``)."""


# -- settings ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """The settings keys this module reads (see ``runtime_settings``)."""

    virtual_time: bool = False
    leaks: str = "cancel"
    leak_allowlist: tuple[str, ...] = ()
    timeout: float | None = 60.0
    no_sleep: bool = False


_SETTINGS_KEY = pytest.StashKey[RuntimeSettings]()


def runtime_settings(config: pytest.Config) -> RuntimeSettings:
    """Return the runtime keys of the run's settings (defaults while the settings module is absent).

    The one place that knows where settings come from.
    """
    cached = config.stash.get(_SETTINGS_KEY, None)
    if cached is not None:
        return cached
    try:
        from ._options import get_settings
    except ImportError:
        settings = RuntimeSettings()
    else:
        full = get_settings(config)
        defaults = RuntimeSettings()
        settings = RuntimeSettings(
            **{
                field.name: getattr(full, field.name, getattr(defaults, field.name))
                for field in dataclasses.fields(RuntimeSettings)
            }
        )
    config.stash[_SETTINGS_KEY] = settings
    return settings


# -- marks -------------------------------------------------------------------------------------


def _virtual_time_mark(
    enabled: bool = True, *, deadline: float | None = None, idle_grace: float = 0.0
) -> tuple[bool, float | None, float]:
    return enabled, deadline, idle_grace


def _sandbox_timeout_mark(seconds: float | None) -> float | None:
    return seconds


def _sandbox_leaks_mark(
    mode: str | None = None, *, allow: tuple[str, ...] | list[str] = ()
) -> tuple[str | None, tuple[str, ...]]:
    if mode is not None and mode not in _LEAK_MODES:
        raise ValueError(f"mode must be one of {', '.join(_LEAK_MODES)}, not {mode!r}")
    return mode, tuple(allow)


def _call_mark(item: pytest.Item, name: str, validator: Callable[..., Any]) -> Any:
    marker = item.get_closest_marker(name)
    if marker is None:
        return None
    try:
        return validator(*marker.args, **marker.kwargs)
    except (TypeError, ValueError) as error:
        raise pytest.UsageError(
            f"{item.nodeid}: bad @pytest.mark.{name}: {error}. "
            f"Signature: {name}{inspect.signature(validator)}"
        ) from None


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "virtual_time(enabled=True, *, deadline=None, idle_grace=0.0): run this async test "
        "on virtual time (sleeps return at once, in timer order); deadline: virtual seconds "
        "after which the test fails.",
        "sandbox_timeout(seconds): per-test timeout of sqlsandbox (None: none); on expiry "
        "the test fails with every task's await chain and every thread's stack.",
        "sandbox_leaks(mode=None, *, allow=()): leak check of this test: fail, cancel, warn "
        "or off; allow: task or thread names / coroutine names that may stay.",
        "allow_sleep: let this test call time.sleep / real-time asyncio.sleep under no_sleep.",
    ):
        config.addinivalue_line("markers", line)


# -- per-test state ----------------------------------------------------------------------------


@dataclasses.dataclass
class _TestState:
    item: pytest.Item
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[Any] | None = None
    timeout: float | None = None
    timeout_source: str = ""
    timed_out: bool = False
    dump: str = ""
    sleeps: list[str] = dataclasses.field(default_factory=list)
    helpers_mark: int = 0
    reported: weakref.WeakSet[asyncio.Task[Any]] = dataclasses.field(
        default_factory=weakref.WeakSet
    )


_STATE_KEY = pytest.StashKey[_TestState]()
_reported_tasks: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()


def _state(item: pytest.Item) -> _TestState:
    state = item.stash.get(_STATE_KEY, None)
    if state is None:
        state = item.stash[_STATE_KEY] = _TestState(item)
    return state


def _leak_policy(item: pytest.Item) -> tuple[str, tuple[str, ...]]:
    settings = runtime_settings(item.config)
    mode, allow = settings.leaks, settings.leak_allowlist
    marked = _call_mark(item, "sandbox_leaks", _sandbox_leaks_mark)
    if marked is not None:
        mode = marked[0] or mode
        allow = allow + marked[1]
    return mode, allow


# -- the async wrapper -------------------------------------------------------------------------


def _is_async_item(item: pytest.Item) -> bool:
    if not isinstance(item, pytest.Function):
        return False
    if not inspect.iscoroutinefunction(item.obj) or getattr(item.obj, "is_hypothesis_test", False):
        return False
    try:
        from pytest_asyncio import is_async_test
    except ImportError:
        handled = False
    else:
        handled = is_async_test(item)
    return handled or "anyio_backend" in item.fixturenames


def _wrap_async(item: pytest.Function) -> Callable[..., Any]:
    original = item.obj
    state = _state(item)
    settings = runtime_settings(item.config)
    marked = _call_mark(item, "virtual_time", _virtual_time_mark)
    use_virtual_time = settings.virtual_time if marked is None else marked[0]
    deadline, idle_grace = (None, 0.0) if marked is None else (marked[1], marked[2])
    mode, allow = _leak_policy(item)

    @functools.wraps(original)
    async def run_test(*args: Any, **kwargs: Any) -> Any:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # anyio on trio: nothing of ours applies
            return await original(*args, **kwargs)
        state.loop = loop
        state.task = asyncio.current_task()
        created: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()
        tracker = task_tracker(loop)
        failed = False
        try:
            with tracker.listening(created.add):
                if use_virtual_time:
                    async with virtual_time(deadline=deadline, idle_grace=idle_grace):
                        return await original(*args, **kwargs)
                return await original(*args, **kwargs)
        except asyncio.CancelledError:
            if state.timed_out and state.task is not None and state.task.uncancel() == 0:
                failed = True
                pytest.fail(_timeout_message(state), pytrace=False)
            failed = True
            raise
        except BaseException:
            failed = True
            raise
        finally:
            state.task = None
            if mode != "off" and not state.timed_out:
                await _check_task_leaks(item, created, mode, allow, failed)
            # Before anyio's runner closes this loop, right after the test returns.
            note_call_ended()

    return run_test


async def _check_task_leaks(
    item: pytest.Item,
    created: weakref.WeakSet[asyncio.Future[Any]],
    mode: str,
    allow: tuple[str, ...],
    test_failed: bool,
) -> None:
    leaked = await find_task_leaks(list(created), allowlist=allow)
    if not leaked:
        return
    report = LeakReport(where=item.nodeid, tasks=leaked)
    report.snapshot()
    _reported_tasks.update(leaked)
    if mode == "cancel" or test_failed:
        report.stuck = await cancel_and_collect(leaked)
    if test_failed:
        return  # the test's own failure explains more than the leak would
    if mode == "warn":
        text = report.format(action="leaks = warn; they keep running")
        warnings.warn(SandboxLeakWarning(text), stacklevel=1)
    elif mode == "cancel":
        pytest.fail(report.format(action="cancelled them; failing the test"), pytrace=False)
    else:
        pytest.fail(report.format(action="leaks = fail; they keep running"), pytrace=False)


# -- no_sleep ---------------------------------------------------------------------------------


def _user_frame(frame: Any, rootpath: Path) -> str | None:
    """Return ``file:line`` when the caller is project code (not a library, not us)."""
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    if "site-packages" in filename or filename.startswith(_PACKAGE_DIR):
        return None
    try:
        Path(filename).resolve().relative_to(rootpath)
    except ValueError:
        return None
    return f"{filename}:{frame.f_lineno}"


@contextlib.contextmanager
def _no_sleep(item: pytest.Item, state: _TestState) -> Iterator[None]:
    real_sleep = time.sleep
    real_async_sleep = asyncio.sleep
    rootpath = item.config.rootpath.resolve()
    fix = (
        "sleeping to wait for something is not allowed here (no_sleep = true). Wait on the "
        "thing itself: await sqlsandbox.eventually(check), sqlsandbox.Probe, an "
        "asyncio.Event, process exit; or run on @pytest.mark.virtual_time, or mark the test "
        "@pytest.mark.allow_sleep."
    )

    def violation(call: str, where: str) -> None:
        message = f"{call} called at {where} in {item.nodeid}: {fix}"
        state.sleeps.append(message)
        pytest.fail(message, pytrace=False)

    def guarded_sleep(seconds: float) -> None:
        where = _user_frame(sys._getframe(1), rootpath) if seconds > 0 else None
        if where is not None:
            violation(f"time.sleep({seconds!r})", where)
        real_sleep(seconds)

    def guarded_async_sleep(delay: float, result: Any = None) -> Any:
        if delay > 0 and current_clock() is None:
            where = _user_frame(sys._getframe(1), rootpath)
            if where is not None:
                violation(f"asyncio.sleep({delay!r})", where)
        return real_async_sleep(delay, result)

    time.sleep = guarded_sleep  # type: ignore[assignment]
    asyncio.sleep = guarded_async_sleep
    try:
        yield
    finally:
        time.sleep = real_sleep
        asyncio.sleep = real_async_sleep


# -- the call phase ----------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    state = _state(item)
    settings = runtime_settings(item.config)
    mode, allow = _leak_policy(item)
    threads_before = threading.enumerate()
    resources_before = set(run_leak_checks()) if mode != "off" else set()
    restore: Callable[[], None] | None = None
    if _is_async_item(item):
        assert isinstance(item, pytest.Function)
        original = item.obj
        item.obj = _wrap_async(item)

        def restore() -> None:
            item.obj = original

    sleep_guard = (
        _no_sleep(item, state)
        if settings.no_sleep and item.get_closest_marker("allow_sleep") is None
        else contextlib.nullcontext()
    )
    try:
        with sleep_guard:
            result = yield
    finally:
        note_call_ended()
        if restore is not None:
            restore()
    # Reached only when the test passed: add what it left behind.
    if state.sleeps:
        pytest.fail(state.sleeps[0], pytrace=False)
    if mode != "off":
        report = LeakReport(
            where=item.nodeid,
            threads=find_thread_leaks(threads_before, allowlist=allow),
            resources=[found for found in run_leak_checks() if found not in resources_before],
        )
        if report:
            report.snapshot()
            if mode == "warn":
                warnings.warn(SandboxLeakWarning(report.format(action="warning")), stacklevel=1)
            else:
                pytest.fail(report.format(action="failing the test"), pytrace=False)
    return result


# -- end of a loop scope -----------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, object, object]:
    result = yield
    name = fixturedef.argname
    if (
        name.startswith("_")
        and name.endswith("_scoped_runner")
        and isinstance(result, asyncio.Runner)
    ):
        runner = result
        scope = name[1 : -len("_scoped_runner")]
        fixturedef.addfinalizer(functools.partial(_check_loop_end, runner, scope, request))
    return result


def _check_loop_end(runner: asyncio.Runner, scope: str, request: pytest.FixtureRequest) -> None:
    """Report tasks pending when a loop scope ends (asyncio.Runner would cancel them quietly)."""
    settings = runtime_settings(request.config)
    mode, allow = settings.leaks, settings.leak_allowlist
    if mode == "off":
        return
    try:
        loop = runner.get_loop()
    except RuntimeError:
        return
    if loop.is_closed() or loop.is_running():
        return
    pending = [
        task
        for task in asyncio.all_tasks(loop)
        if not task.done() and task not in _reported_tasks and not task_allowed(task, allow)
    ]
    if not pending:
        return
    pending.sort(key=lambda task: task.get_name())
    node = request.node.nodeid
    where = f"the {scope}-scoped event loop" + (f" ({node})" if node else "")
    report = LeakReport(where=where, tasks=pending)
    report.snapshot()
    _reported_tasks.update(pending)
    report.stuck = loop.run_until_complete(cancel_and_collect(pending))
    if mode == "warn":
        warnings.warn(SandboxLeakWarning(report.format(action="cancelled")), stacklevel=1)
    else:
        pytest.fail(
            report.format(action="found when the loop scope ended; cancelled them"), pytrace=False
        )


# -- timeouts ----------------------------------------------------------------------------------


def _timeout_for(item: pytest.Item, pytest_timeout: float | None) -> tuple[float | None, str]:
    marked = item.get_closest_marker("sandbox_timeout")
    if marked is not None:
        return _call_mark(
            item, "sandbox_timeout", _sandbox_timeout_mark
        ), "@pytest.mark.sandbox_timeout"
    if pytest_timeout:
        return pytest_timeout, "pytest-timeout: timeout ini, --timeout or @pytest.mark.timeout"
    seconds = runtime_settings(item.config).timeout
    return seconds, "the sqlsandbox timeout setting (--sqlsandbox-timeout)"


def _timeout_message(state: _TestState) -> str:
    return (
        f"Timeout: {state.item.nodeid} ran longer than {state.timeout:g} s "
        f"(from {state.timeout_source}). Where every task and thread was waiting:\n{state.dump}"
    )


def _debugging() -> bool:
    try:
        from pytest_timeout import is_debugging  # type: ignore[import-untyped]
    except ImportError:
        return False
    return bool(is_debugging())


class _Timer:
    """One SIGALRM timer for one test; restores an outer timer (nested pytester runs)."""

    def __init__(self, state: _TestState, seconds: float) -> None:
        self.state = state
        self.seconds = seconds
        self.started = time.monotonic()
        self.previous_handler: Any = None
        self.previous_delay = 0.0

    def start(self) -> None:
        self.previous_handler = signal.signal(signal.SIGALRM, self._fire)
        self.previous_delay, _interval = signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def cancel(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous_handler or signal.SIG_DFL)
        if self.previous_delay:
            left = self.previous_delay - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    def _fire(self, signum: int, frame: Any) -> None:
        __tracebackhide__ = True
        state = self.state
        if _debugging():
            return
        task, loop = state.task, state.loop
        in_loop = (
            task is not None
            and not task.done()
            and loop is not None
            and loop.is_running()
            and asyncio._get_running_loop() is loop
        )
        if in_loop and not state.timed_out:
            # Cooperative first: cancel the test's task so only this test fails and
            # its finally blocks run; force it if the loop is blocked in sync code.
            assert task is not None and loop is not None
            state.timed_out = True
            state.dump = dump_tasks(loop) + dump_threads()
            task.cancel(msg="sqlsandbox: test timeout")
            loop.call_soon_threadsafe(lambda: None)  # wake the selector
            signal.setitimer(signal.ITIMER_REAL, min(2.0, max(self.seconds / 4, 0.5)))
            return
        running = asyncio._get_running_loop()
        if not state.dump:
            state.dump = (dump_tasks(running) if running is not None else "") + dump_threads()
        state.timed_out = True
        pytest.fail(_timeout_message(state), pytrace=False)


_TIMER_KEY = pytest.StashKey[_Timer]()


def _start_timer(item: pytest.Item, seconds: float | None, source: str) -> bool:
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return False
    if not hasattr(signal, "SIGALRM"):
        return False
    _stop_timer(item)
    state = _state(item)
    state.timeout, state.timeout_source = seconds, source
    timer = _Timer(state, seconds)
    item.stash[_TIMER_KEY] = timer
    timer.start()
    return True


def _stop_timer(item: pytest.Item) -> bool:
    timer = item.stash.get(_TIMER_KEY, None)
    if timer is None:
        return False
    del item.stash[_TIMER_KEY]
    timer.cancel()
    return True


_PYTEST_TIMEOUT_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Be pytest-timeout's timer for signal-method tests, so its failure shows the async dump."""
    if getattr(settings, "method", "signal") != "signal":
        return None
    seconds, source = _timeout_for(item, getattr(settings, "timeout", None))
    item.stash[_PYTEST_TIMEOUT_KEY] = True
    if _start_timer(item, seconds, source):
        return True
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    """Stop the timer started for pytest-timeout."""
    return True if _stop_timer(item) else None


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    state = _state(item)
    state.helpers_mark = _processes.started_count()
    own = False
    if not item.stash.get(_PYTEST_TIMEOUT_KEY, False) and not _pytest_timeout_will_time(item):
        seconds, source = _timeout_for(item, None)
        own = _start_timer(item, seconds, source)
    try:
        return (yield)
    finally:
        if own:
            _stop_timer(item)
        if _PYTEST_TIMEOUT_KEY in item.stash:
            del item.stash[_PYTEST_TIMEOUT_KEY]


def _pytest_timeout_will_time(item: pytest.Item) -> bool:
    """Whether pytest-timeout will time this test itself (func_only: it starts later)."""
    if not item.config.pluginmanager.hasplugin("timeout"):
        return False
    try:
        from pytest_timeout import _get_item_settings
    except ImportError:
        return False
    settings = _get_item_settings(item)
    return bool(settings.timeout and settings.timeout > 0)


# -- reports -----------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        state = _state(item)
        for helper in _processes.started_since(state.helpers_mark):
            text = helper.output_text()
            section = f"sqlsandbox: output of {helper.name} ({report.when})"
            if not any(name == section for name, _ in report.sections):
                report.sections.append((section, text or "(no output)"))
    return report


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def free_tcp_port() -> Iterator[int]:
    """A TCP port free on 127.0.0.1, reserved against other xdist workers for this test."""
    port = free_port()
    yield port
    release_port(port)


@pytest.fixture
def sandbox_process() -> Iterator[Callable[..., ManagedProcess]]:
    """Start external processes for this test: ``sandbox_process(argv, ready=port_open(p))``.

    Every process is stopped at teardown (terminate, then kill); a failed
    test's report shows each one's output.
    """
    started: list[ManagedProcess] = []

    def start(argv: list[str], *, ready: Readiness | None = None, **options: Any) -> ManagedProcess:
        process = ManagedProcess(argv, ready=ready, **options)
        started.append(process)
        return process.start()

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture
def sandbox_app_server() -> Iterator[Callable[..., ThreadServer]]:
    """Serve ASGI apps with uvicorn in a thread for this test: ``sandbox_app_server(app).url``."""
    started: list[ThreadServer] = []

    def serve(app: Any, **options: Any) -> ThreadServer:
        server = ThreadServer(app, **options)
        started.append(server)
        return server.start()

    yield serve
    for server in reversed(started):
        server.stop()
