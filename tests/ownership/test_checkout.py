"""Checkout and checkin: transactions open at once, roll back at the end, owners are unique."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sqlsandbox import OwnershipError, ProvisioningError, SandboxError
from sqlsandbox._urls import DatabaseURL
from sqlsandbox.ownership import Sandbox

from .adapters import PsycopgConnector
from .conftest import Backend, insert, names, run


def test_checkin_rolls_back_everything_the_owner_wrote(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    connector = backend.connector()
    owner = sandbox.checkout(name="test_a")
    lease = sandbox.lease(connector)
    assert lease is not None
    insert(lease, tag + "outside-app-transaction")
    lease.begin()
    insert(lease, tag + "committed-by-app")
    lease.commit()
    assert names(lease, tag) == [tag + "committed-by-app", tag + "outside-app-transaction"]
    assert backend.committed(tag) == []  # nobody else sees the owner's transaction
    sandbox.checkin(owner)
    assert not owner.active and owner.status == "checked_in"
    assert backend.committed(tag) == []
    with sandbox.checkout():
        again = sandbox.lease(connector)
        assert again is not None
        assert names(again, tag) == []


def test_checkout_opens_the_transaction_at_once_so_errors_surface_there(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    url = DatabaseURL.parse("postgresql://nobody:secret-pw@127.0.0.1:1/nowhere")
    sandbox = make_sandbox(url)
    sandbox.add_connector(PsycopgConnector(url))
    with pytest.raises(
        ProvisioningError, match=r"Cannot open a test:psycopg connection to"
    ) as info:
        sandbox.checkout(name="test_unreachable")
    assert "secret-pw" not in str(info.value)
    assert "postgresql://nobody:***@127.0.0.1:1/nowhere" in str(info.value)
    assert sandbox.owners == []  # a failed checkout leaves no owner behind


def test_lazy_checkout_opens_nothing_until_a_driver_asks(pg: Backend, pg_sandbox: Sandbox) -> None:
    connector = pg.connector()
    owner = pg_sandbox.checkout(lazy=True)
    assert owner.connection is None and owner.kind is None
    lease = pg_sandbox.lease(connector)
    assert lease is not None
    assert owner.kind == "test:psycopg" and owner.connection is lease.raw
    assert run(lease, "SELECT 1") == [(1,)]
    pg_sandbox.checkin()


def test_second_checkout_in_the_same_context_reports_already_owner(pg_sandbox: Sandbox) -> None:
    owner = pg_sandbox.checkout(name="test_first")
    with pytest.raises(OwnershipError, match=r"already owner 'test_first'.*at most one"):
        pg_sandbox.checkout()
    pg_sandbox.checkin(owner)
    pg_sandbox.checkin(owner)  # a second checkin does nothing
    pg_sandbox.checkout().__exit__(None, None, None)


@pytest.mark.asyncio
async def test_tasks_are_separate_owners_with_separate_transactions(
    pg: Backend, pg_sandbox: Sandbox, tag: str
) -> None:
    connector = pg.connector()

    async def one(i: int) -> list[str]:
        owner = await pg_sandbox.acheckout(name=f"owner-{i}")
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        await asyncio.to_thread(insert, lease, f"{tag}{i}")
        seen = await asyncio.to_thread(names, lease, tag)
        await pg_sandbox.acheckin(owner)
        return seen

    results = await asyncio.gather(*(one(i) for i in range(8)))
    assert results == [[f"{tag}{i}"] for i in range(8)]
    assert pg.committed(tag) == []


def test_sandbox_false_gives_a_plain_connection_whose_writes_commit(
    backend: Backend, sandbox: Sandbox, tag: str
) -> None:
    connector = backend.connector()
    try:
        owner = sandbox.checkout(sandbox=False)
        assert not owner.sandboxed
        lease = sandbox.lease(connector)
        assert lease is not None and not lease.sandboxed
        lease.begin()
        insert(lease, tag + "kept")
        lease.commit()
        lease.begin()
        insert(lease, tag + "dropped")
        lease.rollback()
        assert backend.committed(tag) == [tag + "kept"]  # committed for real, at once
        sandbox.checkin(owner)
        assert backend.committed(tag) == [tag + "kept"]
    finally:
        backend.cleanup(tag)


def test_checkin_without_being_owner_is_refused(pg_sandbox: Sandbox) -> None:
    with pytest.raises(OwnershipError, match=r"has nothing to check in"):
        pg_sandbox.checkin()


def test_isolation_level_is_set_right_after_begin(
    pg: Backend, make_sandbox: Callable[..., Sandbox]
) -> None:
    sandbox = make_sandbox(pg.url, isolation_level="serializable")
    connector = pg.connector()
    sandbox.add_connector(connector)
    with sandbox.checkout():
        lease = sandbox.lease(connector)
        assert lease is not None
        assert run(lease, "SHOW transaction_isolation") == [("serializable",)]
    with sandbox.checkout(isolation_level="REPEATABLE READ"):
        lease = sandbox.lease(connector)
        assert lease is not None
        assert run(lease, "SHOW transaction_isolation") == [("repeatable read",)]


def test_unknown_isolation_level_is_a_config_error() -> None:
    with pytest.raises(SandboxError, match=r"Unknown isolation level 'sometimes'"):
        Sandbox(isolation_level="sometimes")


def test_check_deferred_reports_a_violated_deferred_constraint_and_keeps_going(
    pg: Backend, pg_sandbox: Sandbox
) -> None:
    connector = pg.connector()
    with pg_sandbox.checkout(name="test_fk"):
        lease = pg_sandbox.lease(connector)
        assert lease is not None
        run(lease, "INSERT INTO children (id, parent_id) VALUES (1, 42)")  # deferred: no error yet
        with pytest.raises(SandboxError, match=r"deferred constraint of owner 'test_fk'.*children"):
            pg_sandbox.check_deferred()
        # The check left no trace: the transaction is usable and still deferred.
        run(lease, "INSERT INTO parents (id) VALUES (42)")
        pg_sandbox.check_deferred()
        assert run(lease, "SELECT count(*) FROM children") == [(1,)]


def test_check_deferred_on_checkin_fails_the_checkin_but_cleans_up(
    pg: Backend, make_sandbox: Callable[..., Sandbox]
) -> None:
    sandbox = make_sandbox(pg.url, check_deferred_on_checkin=True)
    connector = pg.connector()
    sandbox.add_connector(connector)
    owner = sandbox.checkout(name="test_broken_fk")
    lease = sandbox.lease(connector)
    assert lease is not None
    run(lease, "INSERT INTO children (id, parent_id) VALUES (7, 700)")
    with pytest.raises(SandboxError, match=r"deferred constraint of owner 'test_broken_fk'"):
        sandbox.checkin(owner)
    assert not owner.active
    assert pg.plain("SELECT count(*) FROM children") == [(0,)]
    with sandbox.checkout():  # the connection went back healthy
        lease = sandbox.lease(connector)
        assert lease is not None
        assert run(lease, "SELECT count(*) FROM children") == [(0,)]
    assert connector.opened == 1
