"""Ownership timeout: an owner that holds its connection too long loses it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from sqlsandbox import OwnershipError
from sqlsandbox.ownership import Sandbox
from sqlsandbox.ownership._timer import call_later

from .conftest import Backend, insert, run


def after(seconds: float) -> threading.Event:
    """An event set by the sandbox's timer thread, after deadlines due before it."""
    event = threading.Event()
    call_later(seconds, event.set)
    return event


def test_an_owner_past_its_timeout_loses_its_connection_mid_query(
    pg: Backend, make_sandbox: Callable[..., Sandbox], tag: str
) -> None:
    sandbox = make_sandbox(pg.url, ownership_timeout=0.5)
    connector = pg.connector()
    sandbox.add_connector(connector)
    owner = sandbox.checkout(name="test_slow")
    lease = sandbox.lease(connector)
    assert lease is not None
    insert(lease, tag + "a")
    with pytest.raises(
        OwnershipError,
        match=r"'test_slow' held its connection longer than its ownership timeout \(0.5s\)",
    ) as info:
        run(lease, "SELECT pg_sleep(30)")
    assert "ownership_timeout" in str(info.value) and "None disables" in str(info.value)
    assert owner.status == "expired"
    with pytest.raises(OwnershipError, match=r"ownership timeout"):
        sandbox.lease(connector)
    sandbox.checkin(owner)  # nothing left to do; no error
    assert pg.committed(tag) == []
    with sandbox.checkout(ownership_timeout=None):  # the closed connection is never reused
        fresh = sandbox.lease(connector)
        assert fresh is not None and fresh.raw is not lease.raw
        assert run(fresh, "SELECT 1") == [(1,)]
    assert connector.opened == 2


def test_an_idle_owner_past_its_timeout_is_closed_too(
    pg: Backend, make_sandbox: Callable[..., Sandbox]
) -> None:
    sandbox = make_sandbox(pg.url, ownership_timeout=0.2)
    connector = pg.connector()
    sandbox.add_connector(connector)
    owner = sandbox.checkout(name="test_idle")
    raw = owner.connection
    assert after(0.4).wait(10)
    assert owner.status == "expired" and raw.closed  # type: ignore[attr-defined]
    with pytest.raises(OwnershipError, match=r"'test_idle' held its connection longer"):
        sandbox.lease(connector)


def test_the_timeout_is_per_checkout_and_can_be_disabled(
    pg: Backend, make_sandbox: Callable[..., Sandbox]
) -> None:
    sandbox = make_sandbox(pg.url, ownership_timeout=0.1)
    connector = pg.connector()
    sandbox.add_connector(connector)
    patient = sandbox.checkout(name="patient", ownership_timeout=None)
    assert after(0.3).wait(10)
    assert patient.active
    lease = sandbox.lease(connector)
    assert lease is not None and run(lease, "SELECT 1") == [(1,)]
    sandbox.checkin(patient)
