"""Who may use an owner's connection: inheritance, allowances, tokens."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sqlsandbox import OwnershipError
from sqlsandbox.ownership import Sandbox

from .conftest import Backend, insert, names


def in_thread(fn: Callable[[], Any], name: str = "worker") -> Any:
    """Run *fn* in a plain thread (no inherited context); return or raise its outcome."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.asyncio
async def test_tasks_taskgroups_gather_and_to_thread_inherit_the_owner(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()
    owner = await pg_sandbox.acheckout(name="test_inherit")

    def write(name: str) -> None:
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        insert(lease, tag + name)

    async def task_write(name: str) -> None:
        assert pg_sandbox.current_owner() is owner
        await asyncio.to_thread(write, name)

    await asyncio.create_task(task_write("create_task"))
    async with asyncio.TaskGroup() as group:
        group.create_task(task_write("taskgroup"))
    await asyncio.gather(task_write("gather1"), task_write("gather2"))
    await asyncio.to_thread(write, "to_thread")
    lease = pg_sandbox.lease(connector)
    assert lease is not None
    assert names(lease, tag) == sorted(
        tag + n for n in ["create_task", "taskgroup", "gather1", "gather2", "to_thread"]
    )
    await pg_sandbox.acheckin()
    assert pg.committed(tag) == []


def test_plain_threads_and_executors_need_allow(pg: Backend, pg_sandbox: Sandbox) -> None:
    connector = pg.connector()
    owner = pg_sandbox.checkout(name="tests/test_app.py::test_threads")
    with pytest.raises(OwnershipError) as info:
        in_thread(lambda: pg_sandbox.lease(connector), name="report-worker")
    message = str(info.value)
    assert "thread 'report-worker'" in message
    assert "manual mode" in message
    assert "'tests/test_app.py::test_threads'" in message  # the owners are named
    for way_out in (
        "sandbox.checkout()",
        "sandbox.allow(",
        "sandbox.join(",
        'mode("shared"',
        "to_thread",
    ):
        assert way_out in message
    assert "https://" in message and "ownership/#ownershiperror" in message

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(OwnershipError, match=r"is not allowed"):
            pool.submit(pg_sandbox.lease, connector).result()
        # The usual fix for executors: carry the context along.
        ctx = contextvars.copy_context()
        assert pool.submit(ctx.run, pg_sandbox.lease, connector).result() is not None
    pg_sandbox.checkin(owner)


def test_allow_a_thread_and_transitively_a_thread_it_allows(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()
    owner = pg_sandbox.checkout()
    go = threading.Event()
    results: dict[str, Any] = {}

    def grandchild() -> None:
        go.wait()
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        insert(lease, tag + "grandchild")

    def child() -> None:
        go.wait()
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        insert(lease, tag + "child")
        worker = threading.Thread(target=grandchild)
        pg_sandbox.allow(threading.current_thread(), worker)  # allowed, so it may allow
        worker.start()
        worker.join()
        results["seen"] = names(lease, tag)

    thread = threading.Thread(target=child)
    pg_sandbox.allow(owner, thread)
    thread.start()
    go.set()
    thread.join()
    assert results["seen"] == [tag + "child", tag + "grandchild"]
    pg_sandbox.checkin(owner)
    # Allowances end with the owner.
    late = threading.Thread(target=lambda: results.setdefault("late", None))
    with pytest.raises(OwnershipError, match=r"owner not found"):
        pg_sandbox.allow(owner, late)


@pytest.mark.asyncio
async def test_allow_a_task_that_does_not_inherit(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()
    # A task created in an empty context inherits nothing.
    started = asyncio.Event()
    proceed = asyncio.Event()

    async def foreign() -> list[str]:
        started.set()
        await proceed.wait()
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        await asyncio.to_thread(insert, lease, tag + "foreign")
        return await asyncio.to_thread(names, lease, tag)

    task = asyncio.get_running_loop().create_task(foreign(), context=contextvars.Context())
    await started.wait()
    owner = await pg_sandbox.acheckout()
    pg_sandbox.allow(owner, task)
    proceed.set()
    assert await task == [tag + "foreign"]
    await pg_sandbox.acheckin(owner)


def test_tokens_join_from_anywhere_and_cannot_check_in(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()
    owner = pg_sandbox.checkout(name="test_http")
    pg_sandbox.allow(owner, "request-header-value-123")

    def request(token: str) -> list[str]:
        with pg_sandbox.join(token) as joined:
            assert joined is owner
            lease = pg_sandbox.lease(connector)
            assert lease is not None
            insert(lease, tag + token[:7])
            with pytest.raises(
                OwnershipError, match=r"only allowed to use the connection of owner 'test_http'"
            ):
                pg_sandbox.checkin()
            with pytest.raises(OwnershipError, match=r"already allowed"):
                pg_sandbox.checkout()
            return names(lease, tag)

    assert in_thread(lambda: request(owner.token)) == [tag + "sqlsand"]
    assert in_thread(lambda: request("request-header-value-123")) == [
        tag + "request",
        tag + "sqlsand",
    ]
    pg_sandbox.checkin(owner)
    with pytest.raises(OwnershipError, match=r"owner not found"):
        in_thread(lambda: request(owner.token))


def test_allow_from_a_non_owner_reports_not_found(pg_sandbox: Sandbox) -> None:
    thread = threading.Thread(target=lambda: None, name="stray")
    with pytest.raises(OwnershipError, match=r"Cannot allow thread 'stray': owner not found"):
        pg_sandbox.allow(None, thread)
    with pytest.raises(OwnershipError, match=r"owner not found. token 'no-such-token'"):
        pg_sandbox.allow("no-such-token", thread)
    with pytest.raises(TypeError, match=r"target must be"):
        with pg_sandbox.checkout() as owner:
            pg_sandbox.allow(owner, 42)


def test_unboxed_code_gets_a_plain_connection(pg_sandbox: Sandbox) -> None:
    with pg_sandbox.unboxed():
        assert pg_sandbox.lease(object()) is None  # type: ignore[arg-type]
    with pytest.raises(OwnershipError):
        pg_sandbox.lease(object())  # type: ignore[arg-type]
