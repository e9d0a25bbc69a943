"""no_sleep: a test that sleeps to wait fails, saying what to wait on instead."""

from __future__ import annotations

import pytest

from .conftest import write_ini


def test_sleeps_fail_under_no_sleep(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(
        """
        import asyncio, time, threading
        import pytest

        def test_time_sleep():
            time.sleep(0.01)

        async def test_asyncio_sleep():
            await asyncio.sleep(0.01)

        async def test_sleep_zero_is_a_yield():
            await asyncio.sleep(0)
            time.sleep(0)

        @pytest.mark.virtual_time
        async def test_virtual_sleep_is_fine():
            await asyncio.sleep(60)

        @pytest.mark.allow_sleep
        def test_allowed():
            time.sleep(0.001)

        def test_library_sleeps_are_not_ours():
            # threading's own waits do not go through time.sleep; a library's sleep
            # (site-packages) is not the test's doing either.
            threading.Event().wait(0.001)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--sqlsandbox-no-sleep")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*time.sleep(0.01) called at *test_sleeps_fail_under_no_sleep.py:5 in *test_time_sl*",
            "*await sqlsandbox.eventually(check), sqlsandbox.Probe*",
        ]
    )
    result.stdout.fnmatch_lines(["*asyncio.sleep(0.01) called at*test_asyncio_sleep*"])


def test_off_by_default(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    pytester.makepyfile("import time\n\ndef test_sleeps():\n    time.sleep(0.001)\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
