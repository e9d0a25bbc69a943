"""Virtual time: timers jump in order, real work stays real, marks and config switch it on."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from sqlsandbox.runtime import (
    VirtualClock,
    VirtualDeadlineError,
    current_clock,
    new_virtual_time_loop,
    virtual_time,
)
from sqlsandbox.runtime._virtual_time import _OffsetTime

from .conftest import write_ini


def run_virtual(coro_fn):  # type: ignore[no-untyped-def]
    with asyncio.Runner(loop_factory=new_virtual_time_loop) as runner:
        return runner.run(coro_fn())


def test_sleeps_return_at_once_in_timer_order() -> None:
    async def main() -> tuple[list[float], float]:
        order: list[float] = []
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def sleeper(seconds: float) -> None:
            await asyncio.sleep(seconds)
            order.append(seconds)

        await asyncio.gather(*(sleeper(s) for s in (3600, 1, 60, 0.5, 86400)))
        return order, loop.time() - start

    # A real day would hit the test timeout long before: passing proves the jumps.
    order, elapsed = run_virtual(main)
    assert order == [0.5, 1, 60, 3600, 86400]
    assert elapsed == pytest.approx(86400)


def test_executor_work_is_waited_for_in_real_time() -> None:
    release = threading.Event()

    def work() -> str:
        release.wait(5)
        return "done"

    async def main() -> tuple[str, list[str]]:
        loop = asyncio.get_running_loop()
        events: list[str] = []

        async def timer() -> None:
            await asyncio.sleep(10)
            events.append("timer")

        timer_task = asyncio.create_task(timer())
        future = loop.run_in_executor(None, work)
        # The executor blocks until released: the 10 s timer must not fire first,
        # and a 1 s bound on the work must not expire while it runs for real.
        loop.call_soon(lambda: threading.Timer(0.05, release.set).start())
        result = await asyncio.wait_for(future, 1)
        events.append("work")
        await timer_task
        return result, events

    result, events = run_virtual(main)
    assert result == "done"
    assert events == ["work", "timer"]


def test_a_reply_in_flight_keeps_real_time() -> None:
    """A client that sent a request waits for the reply for real, even with timers pending."""

    async def main() -> bytes:
        replied = threading.Event()

        def slow_server(listener: socket.socket) -> None:
            conn, _ = listener.accept()
            with conn:
                data = conn.recv(100)
                replied.wait(0.1)  # the server takes 100 ms of real time to answer
                conn.sendall(data.upper())

        listener = socket.create_server(("127.0.0.1", 0))
        thread = threading.Thread(target=slow_server, args=(listener,))
        thread.start()
        try:
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            writer.write(b"ping\n")
            later = asyncio.create_task(asyncio.sleep(30))
            reply = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            await writer.wait_closed()
            await later
            return reply
        finally:
            thread.join()
            listener.close()

    assert run_virtual(main) == b"PING\n"


async def _deadline_main() -> None:
    async with virtual_time(deadline=100) as clock:
        assert current_clock() is clock
        await asyncio.sleep(1000)


def test_virtual_deadline_fails_with_where_tasks_wait() -> None:
    with pytest.raises(VirtualDeadlineError, match=r"virtual deadline of 100 s passed") as info:
        asyncio.run(_deadline_main())
    assert "await asyncio.sleep(1000)" in str(info.value)


def test_clock_detaches_and_time_stays_monotonic() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with VirtualClock(loop) as clock:
            await asyncio.sleep(500)
            assert clock.elapsed == pytest.approx(500)
            reached = loop.time()
        assert current_clock() is None
        assert loop.time() >= reached  # no jump back to the real clock
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        assert time.perf_counter() - started >= 0.005  # real time again

    asyncio.run(main())


def test_uvloop_like_loops_get_a_clear_error() -> None:
    class NotSelector(asyncio.AbstractEventLoop):
        pass

    with pytest.raises(Exception, match="needs an asyncio selector event loop"):
        VirtualClock(NotSelector())


MARKED = """
import asyncio
import pytest

{decorator}
async def test_hour():
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(3600)  # for real, --timeout=30 would fail the test
    assert loop.time() - start == pytest.approx(3600)
"""


@pytest.mark.parametrize(
    ("mode", "decorator"),
    [
        pytest.param("strict", "@pytest.mark.asyncio\n@pytest.mark.virtual_time", id="strict"),
        pytest.param("auto", "@pytest.mark.virtual_time", id="auto"),
        pytest.param(
            "auto",
            "@pytest.mark.asyncio(loop_scope='module')\n@pytest.mark.virtual_time",
            id="module-loop",
        ),
        pytest.param("strict", "@pytest.mark.anyio\n@pytest.mark.virtual_time", id="anyio"),
    ],
)
def test_mark_runs_an_hour_instantly(pytester: pytest.Pytester, mode: str, decorator: str) -> None:
    write_ini(pytester, mode=mode)
    conftest = "import pytest\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"
    pytester.makeconftest(conftest)
    pytester.makepyfile(MARKED.format(decorator=decorator))
    result = pytester.runpytest("-p", "no:cacheprovider", "--timeout=30")
    result.assert_outcomes(passed=1)


def test_without_the_mark_time_is_real(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def test_real():
            loop = asyncio.get_running_loop()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(3600)
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_module_and_class_marks_and_deadline(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(
        """
        import asyncio, pytest

        pytestmark = pytest.mark.virtual_time

        async def test_module_level():
            await asyncio.sleep(7200)

        @pytest.mark.virtual_time(deadline=60)
        class TestDeadline:
            async def test_too_long(self):
                await asyncio.sleep(61)

            async def test_short(self):
                await asyncio.sleep(59)

        @pytest.mark.virtual_time(False)
        async def test_opt_out():
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.sleep(0.01)
            assert loop.time() - start < 1
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*VirtualDeadlineError: the virtual deadline of 60 s passed*"])


def test_config_turns_it_on_for_every_async_test(pytester: pytest.Pytester) -> None:
    write_ini(pytester, mode="auto")
    pytester.makepyfile(
        """
        import asyncio

        async def test_day():
            await asyncio.sleep(86400)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--sqlsandbox-virtual-time")
    result.assert_outcomes(passed=1)
    # Without the setting, the same test would wait a real day: the timeout proves it.
    result = pytester.runpytest("-p", "no:cacheprovider", "--sqlsandbox-timeout=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Timeout*ran longer than 1 s*", "*await asyncio.sleep(86400)*"])


def test_a_long_lived_loop_keeps_one_clock_wrapper() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        for _ in range(200):
            with VirtualClock(loop):
                await asyncio.sleep(10)
        clock = loop.time
        assert isinstance(clock, _OffsetTime)
        assert not isinstance(clock.base, _OffsetTime)
        return clock.offset

    # 200 tests on one module-scoped loop must not stack 200 clock wrappers.
    assert asyncio.run(main()) == pytest.approx(2000, abs=1)
