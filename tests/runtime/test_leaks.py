"""Leak checks: tasks and threads a test leaves behind fail it, naming them and where they wait."""

from __future__ import annotations

import pytest

from .conftest import write_ini

LEAKY = """
import asyncio, threading
import pytest

async def forever():
    await asyncio.Event().wait()

async def test_leaks_a_task():
    asyncio.create_task(forever(), name="orphan")

async def test_clean():
    task = asyncio.create_task(forever())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
"""


def test_cancel_mode_fails_naming_task_wait_point_and_creation(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_leaks_a_task left things running (cancelled them; failing the test)*",
            "*Task 'orphan' running test_leaky:forever*",
            "*await asyncio.Event().wait()*",
            "*created at:*",
            '*asyncio.create_task(forever(), name="orphan")*',
            "*Fix: await or cancel what you start*",
        ]
    )


def test_allowlist_and_off_and_warn(pytester: pytest.Pytester) -> None:
    # "default": this suite turns warnings into errors, and an in-process run inherits that.
    write_ini(pytester, mode="auto", extra="filterwarnings = default")
    pytester.makepyfile(test_leaky=LEAKY)
    allowed = pytester.runpytest("-p", "no:cacheprovider", "--sqlsandbox-leak-allowlist=orphan")
    allowed.assert_outcomes(passed=2)
    off = pytester.runpytest("-p", "no:cacheprovider", "--sqlsandbox-leaks=off")
    off.assert_outcomes(passed=2)
    warn = pytester.runpytest("-p", "no:cacheprovider", "--sqlsandbox-leaks=warn")
    warn.assert_outcomes(passed=2, warnings=1)
    warn.stdout.fnmatch_lines(
        ["*SandboxLeakWarning: test_leaky.py::test_leaks_a_task left things running*", "*'orphan'*"]
    )


def test_mark_overrides_per_test(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def forever():
            await asyncio.Event().wait()

        @pytest.mark.sandbox_leaks(allow=["*forever"])
        async def test_allowed_by_coroutine_name():
            asyncio.create_task(forever())

        @pytest.mark.sandbox_leaks("off")
        async def test_off():
            asyncio.create_task(forever())

        @pytest.mark.sandbox_leaks("sometimes")
        async def test_bad_mark():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*bad @pytest.mark.sandbox_leaks: mode must be one of*"])


def test_fail_mode_leaves_tasks_running_and_loop_scope_end_reports(
    pytester: pytest.Pytester,
) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(
        """
        import asyncio, pytest, pytest_asyncio

        @pytest_asyncio.fixture(loop_scope="module", scope="module")
        async def background():
            # A module-scoped fixture that starts a task and never stops it.
            asyncio.create_task(asyncio.Event().wait(), name="forgotten-by-fixture")
            yield

        @pytest.mark.asyncio(loop_scope="module")
        async def test_uses_it(background):
            pass
        """
    )
    # In a process of its own: the report comes from the module loop's end,
    # which must not depend on loops other in-process runs left behind.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_uses_it*",
            "*the module-scoped event loop*found when the loop scope ended; cancelled them*",
            "*forgotten-by-fixture*",
        ]
    )


def test_threads_started_and_not_joined(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    pytester.makepyfile(
        """
        import threading

        stop = threading.Event()

        def test_starts_thread():
            threading.Thread(target=stop.wait, name="never-joined", daemon=True).start()

        def test_joins_thread():
            done = threading.Event()
            thread = threading.Thread(target=done.wait, name="joined")
            thread.start()
            done.set()
            # Not joined here: the leak check's grace waits for it to end.

        def teardown_module():
            stop.set()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*1 thread(s) still alive:*", "*Thread 'never-joined' (started, never joined)*"]
    )


def test_registered_resource_checks(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    pytester.makepyfile(
        """
        from sqlsandbox.runtime import add_leak_check

        held = []
        def unreturned():
            return [f"connection {c} not checked in" for c in held]

        add_leak_check("sandbox connections", unreturned)

        def test_keeps_a_connection():
            held.append("#1")

        def test_gives_back():
            held.clear()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*sandbox connections: connection #1 not checked in*"])
