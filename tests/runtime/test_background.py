"""Background-task helpers: one iteration, bounded cancel, restart after a crash."""

from __future__ import annotations

import asyncio

import pytest

from sqlsandbox.runtime import (
    StuckTaskError,
    WaitTimeoutError,
    assert_restarted,
    cancel_and_wait,
    crash_task,
    run_iterations,
    run_once,
)


class Flusher:
    """Production-style periodic task: no run_once flag anywhere."""

    def __init__(self) -> None:
        self.flushed = 0
        self.closed = False

    async def run_forever(self, interval: float = 30.0) -> None:
        try:
            while True:
                self.flushed += 1
                await asyncio.sleep(interval)
        finally:
            self.closed = True


async def test_run_once_does_one_iteration_and_runs_finally() -> None:
    flusher = Flusher()
    outcome = await run_once(flusher.run_forever)
    assert flusher.flushed == 1
    assert flusher.closed
    assert outcome.count == 1
    assert outcome.sleeps == (30.0,)
    assert not outcome.finished


async def test_run_iterations_skips_earlier_sleeps() -> None:
    flusher = Flusher()
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await run_iterations(flusher.run_forever(interval=3600), 3)
    assert flusher.flushed == 3
    assert outcome.sleeps == (3600, 3600, 3600)
    assert loop.time() - started < 3600  # the two earlier hour-long sleeps returned at once


async def test_a_crash_inside_the_iteration_propagates() -> None:
    async def broken() -> None:
        raise ValueError("flush failed")

    with pytest.raises(ValueError, match="flush failed"):
        await run_once(broken)


async def test_a_loop_that_never_sleeps_says_where_it_waits_and_what_to_do() -> None:
    never = asyncio.Event()

    async def waits_on_an_event() -> None:
        while True:
            await never.wait()  # no asyncio.sleep: run_once cannot stop it at a sleep

    with pytest.raises(
        StuckTaskError,
        match=r"(?s)the periodic task did not reach sleep #1 within 0.05 s of loop time \(it "
        r"slept 0 time\(s\)\); it waits here:\n.*waits_on_an_event.*\nFix: if that wait never "
        r"ends, .* raise timeout=\. .* cancel_and_wait\(\) instead\.",
    ):
        await run_once(waits_on_an_event, timeout=0.05)


async def test_a_loop_that_swallows_cancellation_at_its_sleep_is_named() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await release.wait()  # keeps going after cancellation: the bug to surface
                return

    with pytest.raises(
        StuckTaskError,
        match=r"(?s)the periodic task ignored cancellation at its sleep #1 and still runs after "
        r"0.05 s; it waits here:\n.*stubborn.*\nFix: let asyncio\.CancelledError through",
    ):
        await run_once(stubborn, timeout=0.05)
    release.set()


async def test_cancel_and_wait_bounds_a_stubborn_task() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await release.wait()
                return
            except asyncio.CancelledError:
                continue  # ignores cancellation: a bug the helper must surface

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with pytest.raises(StuckTaskError, match=r"Task 'stubborn' .* still runs after 0.05 s"):
        await cancel_and_wait(task, timeout=0.05)
    release.set()
    await task

    polite = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    await cancel_and_wait(polite)
    assert polite.cancelled()


async def test_supervisor_restart_is_asserted() -> None:
    crashes: list[str] = []

    async def worker() -> None:
        await asyncio.Event().wait()

    async def supervisor() -> None:
        while True:
            task = asyncio.create_task(worker(), name="worker")
            try:
                await task
            except RuntimeError as error:
                crashes.append(str(error))

    boss = asyncio.create_task(supervisor())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    restarted = await assert_restarted("worker", error=RuntimeError("boom"))
    assert crashes == ["boom"]
    assert restarted.get_name() == "worker" and not restarted.done()
    await cancel_and_wait(boss)
    await cancel_and_wait(restarted)


async def test_no_restart_is_reported() -> None:
    async def lonely() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(lonely(), name="lonely")
    await asyncio.sleep(0)
    with pytest.raises(WaitTimeoutError, match="supervisor did not restart it"):
        await assert_restarted("lonely", timeout=0.05)
    assert task.done()
    with pytest.raises(RuntimeError, match="crashed by sqlsandbox"):
        task.result()


async def test_crash_task_needs_a_suspended_task() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    with pytest.raises(ValueError, match="not suspended on a future"):
        crash_task(task)
    await task


pytestmark = pytest.mark.asyncio
