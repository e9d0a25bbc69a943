"""at_loop_end: work done on an event loop while it shuts down, before it closes."""

from __future__ import annotations

import asyncio
import gc
import unittest
from collections.abc import Callable
from typing import Any

from sqlsandbox.drivers._loops import at_loop_end
from sqlsandbox.ownership import host_loop


def _recorder(log: list[Any], name: str) -> Callable[[], Any]:
    async def callback() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # it may await: the loop still runs
        log.append((name, loop.is_running(), loop.is_closed()))

    return callback


def test_callbacks_run_on_the_loop_after_its_tasks_are_cancelled() -> None:
    log: list[Any] = []

    async def background() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            log.append("task cancelled")

    async def main() -> None:
        asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)
        assert at_loop_end(_recorder(log, "first"))
        assert at_loop_end(_recorder(log, "second"))
        assert log == []

    asyncio.run(main())
    assert log == ["task cancelled", ("first", True, False), ("second", True, False)]


def test_each_loop_runs_only_its_own_callbacks() -> None:
    log: list[Any] = []
    with asyncio.Runner() as one, asyncio.Runner() as two:

        async def register(name: str) -> None:
            at_loop_end(_recorder(log, name))

        one.run(register("one"))
        two.run(register("two"))
        two.close()
        assert [entry[0] for entry in log] == ["two"]
    assert [entry[0] for entry in log] == ["two", "one"]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    log: list[Any] = []

    async def fails() -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        at_loop_end(fails)
        at_loop_end(_recorder(log, "after"))

    asyncio.run(main())
    assert [entry[0] for entry in log] == ["after"]


def test_unittest_isolated_asyncio_test_case_runs_them_too() -> None:
    log: list[Any] = []

    class Case(unittest.IsolatedAsyncioTestCase):
        async def test_register(self) -> None:
            at_loop_end(_recorder(log, "unittest"))

    result = unittest.TestResult()
    Case("test_register").run(result)
    assert result.wasSuccessful()
    assert log == [("unittest", True, False)]


def test_a_loop_closed_without_shutdown_drops_its_callbacks_quietly() -> None:
    # Under filterwarnings = error, a generator finalized on a closed loop
    # would surface as an unraisable-exception error at gc time.
    log: list[Any] = []
    loop = asyncio.new_event_loop()

    async def register(name: str) -> None:
        at_loop_end(_recorder(log, name))

    loop.run_until_complete(register("closed bare"))
    loop.close()
    asyncio.run(register("run"))  # this registration drops the closed loop's watch
    del loop
    gc.collect()
    assert [entry[0] for entry in log] == ["run"]


def test_nothing_to_watch_outside_a_loop_or_on_the_host_loop() -> None:
    async def noop() -> None:
        pass

    async def register() -> bool:
        return at_loop_end(noop)

    assert at_loop_end(noop) is False
    # The sandbox's host loop runs as long as the process: it never ends.
    assert host_loop().run_sync(register()) is False
