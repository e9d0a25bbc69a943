"""Per-test timeouts: only the slow test fails, and the failure shows where everything waits."""

from __future__ import annotations

import pytest

from .conftest import write_ini

HANGS = """
import asyncio, threading, time
import pytest

async def stuck_worker(event):
    await event.wait()

async def test_hangs():
    event = asyncio.Event()
    worker = asyncio.create_task(stuck_worker(event), name="stuck-worker")
    await asyncio.wait_for(worker, 3600)

def test_sync_hang():
    threading.Event().wait(3600)

async def test_after():
    pass
"""


def test_timeout_fails_only_that_test_and_dumps(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(test_hang=HANGS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sqlsandbox-timeout=0.5")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*Timeout: test_hang.py::test_hangs ran longer than 0.5 s*",
            "*Task 'stuck-worker' running test_hang:stuck_worker*",
            "*await event.wait()*",
            "*thread(s) ---*",
        ]
    )
    result.stdout.fnmatch_lines(["*Timeout: test_hang.py::test_sync_hang ran longer than 0.5 s*"])


def test_mark_overrides_and_pytest_timeout_is_integrated(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto", extra="timeout = 0.5")
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def test_pytest_timeout_value():
            await asyncio.sleep(3600)

        @pytest.mark.sandbox_timeout(0.3)
        async def test_own_mark():
            await asyncio.sleep(3600)

        @pytest.mark.timeout(0.4)
        async def test_pytest_timeout_mark():
            await asyncio.sleep(3600)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*ran longer than 0.5 s (from pytest-timeout*",
            "*await asyncio.sleep(3600)*",
        ]
    )
    result.stdout.fnmatch_lines(["*ran longer than 0.3 s (from @pytest.mark.sandbox_timeout)*"])
    result.stdout.fnmatch_lines(["*ran longer than 0.4 s (from pytest-timeout*"])
    # pytest-timeout did not fire a second timer of its own.
    assert "Timeout >" not in result.stdout.str()


def test_timeout_in_a_blocked_loop_still_fails_the_test(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(
        """
        import threading

        async def test_blocks_the_loop():
            threading.Event().wait(3600)  # sync wait inside a coroutine: the loop is stuck

        def test_next():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sqlsandbox-timeout=0.3")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ran longer than 0.3 s*", "*threading.Event().wait(3600)*"])
