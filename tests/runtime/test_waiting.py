"""eventually and Probe: wait for the state or the message, on the loop's clock."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

import sqlsandbox
from sqlsandbox.runtime import Probe, WaitTimeoutError, eventually, new_virtual_time_loop


def run(coro_fn, *, virtual: bool = False):  # type: ignore[no-untyped-def]
    factory = new_virtual_time_loop if virtual else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro_fn())


def test_exported_from_the_package() -> None:
    assert sqlsandbox.eventually is eventually
    assert sqlsandbox.Probe is Probe


def test_eventually_returns_once_an_assertion_block_passes() -> None:
    async def main() -> int:
        state = {"count": 0}

        async def producer() -> None:
            for _ in range(3):
                await asyncio.sleep(0.01)
                state["count"] += 1

        task = asyncio.create_task(producer())

        def check() -> None:
            assert state["count"] == 3

        await eventually(check, timeout=5)
        await task
        return state["count"]

    assert run(main) == 3


def test_eventually_wakes_on_an_event_and_returns_the_predicate_value() -> None:
    async def main() -> tuple[str, int]:
        ready = asyncio.Event()
        box: list[str] = []
        calls = 0

        def check() -> str | None:
            nonlocal calls
            calls += 1
            return box[0] if box else ""

        async def later() -> None:
            await asyncio.sleep(0)
            box.append("value")
            ready.set()

        task = asyncio.create_task(later())
        # A long poll interval: only the event can make this fast.
        result = await eventually(check, timeout=5, on=ready, interval=10, max_interval=10)
        await task
        return result, calls

    result, calls = run(main)
    assert result == "value"
    assert calls == 2


def test_eventually_times_out_on_virtual_time_with_the_last_failure() -> None:
    async def main() -> None:
        def check() -> None:
            assert 1 + 1 == 3, "arithmetic is broken"

        await eventually(check, timeout=30)

    with pytest.raises(WaitTimeoutError, match=r"did not pass within 30 s of loop time") as info:
        run(main, virtual=True)  # 30 s of virtual time: returns at once
    assert "arithmetic is broken" in str(info.value)
    assert isinstance(info.value, AssertionError)


def test_eventually_propagates_real_errors_at_once() -> None:
    async def main() -> None:
        await eventually(lambda: 1 / 0, timeout=5)

    with pytest.raises(ZeroDivisionError):
        run(main)


def test_probe_receives_matching_messages_from_threads() -> None:
    async def main() -> tuple[object, object, list[object]]:
        probe = Probe("events")
        threading.Thread(target=probe, args=({"type": "created", "id": 7},)).start()
        threading.Thread(target=probe, args=("noise",)).start()
        created = await probe.received({"type": "created"}, timeout=5)
        noise = await probe.received(re.compile("noi"), timeout=5)
        probe(1, 2)
        return created, noise, probe.messages

    created, noise, left = run(main)
    assert created == {"type": "created", "id": 7}
    assert noise == "noise"
    assert left == [(1, 2)]


def test_probe_timeout_lists_what_it_holds() -> None:
    async def main() -> None:
        probe = Probe("bus")
        probe("hello")
        await probe.received(int, timeout=2)

    with pytest.raises(
        WaitTimeoutError,
        match=r"bus expected an instance of int, none came within 2 s .*holds 1 .*: 'hello'",
    ):
        run(main, virtual=True)


def test_assert_nothing_received() -> None:
    probe = Probe()
    probe.assert_nothing_received()
    probe("late")
    probe.assert_nothing_received(int)
    with pytest.raises(
        WaitTimeoutError, match=r"expected nothing matching \(any message\) but holds 1: 'late'"
    ):
        probe.assert_nothing_received()


def test_probe_wakes_eventually() -> None:
    async def main() -> int:
        probe = Probe()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, probe, "tick")
        await eventually(lambda: len(probe) == 1, timeout=5, interval=10, max_interval=10)
        return len(probe)

    assert run(main) == 1


def test_wait_received_blocks_a_sync_test() -> None:
    probe = Probe()
    threading.Timer(0.01, probe, args=("from a thread",)).start()
    assert probe.wait_received(timeout=5) == "from a thread"
    with pytest.raises(WaitTimeoutError, match="real time"):
        probe.wait_received(timeout=0.01)
