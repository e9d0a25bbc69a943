"""The runtime hooks under anyio's pytest plugin: leaks, timeouts and virtual time together."""

from __future__ import annotations

import pytest

from .conftest import write_ini


def test_anyio_tests_get_leak_checks_timeouts_and_virtual_time(pytester: pytest.Pytester) -> None:
    write_ini(pytester)
    pytester.makeconftest(
        "import pytest\n\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"
    )
    pytester.makepyfile(
        """
        import asyncio
        import anyio
        import pytest

        pytestmark = pytest.mark.anyio

        async def test_leaks():
            asyncio.create_task(asyncio.Event().wait(), name="anyio-orphan")

        @pytest.mark.sandbox_timeout(0.3)
        async def test_hangs():
            await anyio.Event().wait()

        @pytest.mark.virtual_time
        async def test_virtual_fail_after():
            with anyio.fail_after(3600):
                await anyio.sleep(1800)

        async def test_still_runs_after_the_others():
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep, 0)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*test_leaks left things running*", "*'anyio-orphan'*"])
    result.stdout.fnmatch_lines(
        ["*test_hangs ran longer than 0.3 s*", "*await anyio.Event().wait()*"]
    )
