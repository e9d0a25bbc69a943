"""The notification worker pool: delivery, failures recorded in the database, crash and restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from helpers import HOME, bearer, named
from httpx import AsyncClient
from reminders.audit import audit_logs
from reminders.events import Event, EventBus
from reminders.models import Reminder
from reminders.workers import DeliveryError, Notification, NotificationPool, Outbox
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import sqlsandbox
from sqlsandbox.runtime import assert_restarted


class Flaky:
    """Fails the first ``failures`` deliveries with DeliveryError, then delivers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError("mail server busy")
        self.sent.append(notification)


class Buggy:
    """A notifier with a bug: it crashes the worker that calls it, once."""

    def __init__(self) -> None:
        self.crashed = False
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        if not self.crashed:
            self.crashed = True
            raise KeyError("template 'reminder.html'")
        self.sent.append(notification)


class Gate:
    """Holds every delivery until released; tells how many were in flight at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.arrived = sqlsandbox.Probe("deliveries")

    async def send(self, notification: Notification) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.arrived(notification.reminder_id)
        await self.open.wait()
        self.in_flight -= 1


@pytest.fixture
async def outbox_pool() -> AsyncIterator[NotificationPool]:
    pool = NotificationPool(size=2, notifier=Outbox())
    await pool.start()
    yield pool
    await pool.stop()


async def audit_rows(session: AsyncSession, action: str) -> list[dict[str, object]]:
    rows = await session.execute(
        select(audit_logs.c.entity_id, audit_logs.c.details)
        .where(audit_logs.c.action == action)
        .order_by(audit_logs.c.id)
    )
    return [dict(row._mapping) for row in rows]


@pytest.mark.parametrize(
    ("reminder_id", "to"),
    [(1, "alice@example.com"), (2, "alice@example.com"), (5, "bob@example.com")],
)
async def test_a_notification_is_sent_and_recorded(
    outbox_pool: NotificationPool, async_db_session: AsyncSession, reminder_id: int, to: str
) -> None:
    outbox_pool.enqueue(reminder_id)
    await outbox_pool.join()
    assert [o.status for o in outbox_pool.outcomes] == ["sent"]
    outbox = outbox_pool.notifier
    assert isinstance(outbox, Outbox)
    assert [(n.reminder_id, n.to) for n in outbox.sent] == [(reminder_id, to)]
    reminder = await async_db_session.get(Reminder, reminder_id)
    assert reminder is not None
    assert reminder.notified_at is not None
    assert reminder.notify_attempts == 1
    assert await audit_rows(async_db_session, "notification.sent") == [
        {"entity_id": reminder_id, "details": {"to": to, "attempt": 1}}
    ]


@pytest.mark.parametrize(
    ("reminder_id", "status"), [(3, "skipped"), (6, "skipped"), (999, "missing")]
)
async def test_done_or_missing_reminders_are_not_sent(
    outbox_pool: NotificationPool, reminder_id: int, status: str
) -> None:
    outbox_pool.enqueue(reminder_id)
    await outbox_pool.join()
    assert [(o.reminder_id, o.status) for o in outbox_pool.outcomes] == [(reminder_id, status)]
    assert isinstance(outbox_pool.notifier, Outbox)
    assert outbox_pool.notifier.sent == []


async def test_a_delivery_failure_is_recorded(async_db_session: AsyncSession) -> None:
    pool = NotificationPool(size=1, notifier=Flaky(failures=1))
    await pool.start()
    try:
        pool.enqueue(1)
        await pool.join()
    finally:
        await pool.stop()
    assert [(o.status, o.error) for o in pool.outcomes] == [("failed", "mail server busy")]
    reminder = await async_db_session.get(Reminder, 1)
    assert reminder is not None
    assert (reminder.notified_at, reminder.notify_attempts) == (None, 1)
    assert await audit_rows(async_db_session, "notification.failed") == [
        {"entity_id": 1, "details": {"error": "mail server busy", "attempt": 1}}
    ]


@pytest.mark.parametrize("failures", [0, 1, 2, 3])
async def test_retries_until_delivered(async_db_session: AsyncSession, failures: int) -> None:
    notifier = Flaky(failures)
    pool = NotificationPool(size=1, notifier=notifier)
    await pool.start()
    try:
        for _ in range(failures + 1):
            pool.enqueue(2)
            await pool.join()
    finally:
        await pool.stop()
    assert [o.status for o in pool.outcomes] == ["failed"] * failures + ["sent"]
    assert len(notifier.sent) == 1
    reminder = await async_db_session.get(Reminder, 2)
    assert reminder is not None
    assert reminder.notify_attempts == failures + 1
    assert reminder.notified_at is not None


async def test_a_crashed_worker_is_replaced_and_the_crash_recorded(
    async_db_session: AsyncSession,
) -> None:
    notifier = Buggy()
    pool = NotificationPool(size=1, notifier=notifier)
    await pool.start()
    first_worker = pool.workers[0]
    try:
        pool.enqueue(1)
        await pool.join()  # returns once the supervisor has recorded the crash
        assert pool.restarts == 1
        assert pool.workers[0] is not first_worker
        assert first_worker.done()
        # The new worker carries on with the next job.
        pool.enqueue(2)
        await pool.join()
    finally:
        await pool.stop()
    assert [(o.reminder_id, o.status) for o in pool.outcomes] == [(1, "crashed"), (2, "sent")]
    crashes = await audit_rows(async_db_session, "worker.crashed")
    assert len(crashes) == 1
    assert crashes[0]["entity_id"] == 0
    details = crashes[0]["details"]
    assert isinstance(details, dict)
    assert details["reminder_id"] == 1
    assert "reminder.html" in details["error"]


@pytest.mark.parametrize("slot", [0, 1, 2])
async def test_the_supervisor_restarts_any_worker(
    async_db_session: AsyncSession, slot: int
) -> None:
    pool = NotificationPool(size=3, notifier=Outbox(), name="notify")
    await pool.start()
    await asyncio.sleep(0)  # a yield, not a wait: the new workers reach their first await
    try:
        replacement = await assert_restarted(
            f"notify-worker-{slot}", error=ConnectionResetError("gone")
        )
        assert pool.workers[slot] is replacement
        assert pool.restarts == 1
        pool.enqueue(4)
        await pool.join()
        assert [o.status for o in pool.outcomes] == ["sent"]
        crashes = await audit_rows(async_db_session, "worker.crashed")
        assert [(row["entity_id"], row["details"]["reminder_id"]) for row in crashes] == [
            (slot, None)
        ]  # type: ignore[index]
    finally:
        await pool.stop()


@pytest.mark.parametrize("size", [1, 2, 3, 5])
async def test_workers_run_in_parallel_up_to_the_pool_size(size: int) -> None:
    gate = Gate()
    pool = NotificationPool(size=size, notifier=gate)
    await pool.start()
    try:
        for reminder_id in (1, 2, 4, 5, 1, 2):
            pool.enqueue(reminder_id)
        for _ in range(min(size, 6)):
            await gate.arrived.received(timeout=5)
        assert gate.in_flight == min(size, 6)
        gate.open.set()
        await pool.join()
    finally:
        await pool.stop()
    assert gate.most == min(size, 6)
    assert len(pool.outcomes) == 6


async def test_many_jobs_each_recorded_once(async_db_session: AsyncSession) -> None:
    async_db_session.add_all(Reminder(list_id=HOME, title=f"bulk {n}") for n in range(20))
    await async_db_session.commit()
    ids = list(
        await async_db_session.scalars(select(Reminder.id).where(Reminder.title.like("bulk %")))
    )
    pool = NotificationPool(size=4, notifier=Outbox())
    await pool.start()
    try:
        for reminder_id in ids:
            pool.enqueue(reminder_id)
        await pool.join()
    finally:
        await pool.stop()
    assert sorted(o.reminder_id for o in pool.outcomes if o.status == "sent") == sorted(ids)
    async_db_session.expire_all()
    attempts = await async_db_session.scalars(
        select(Reminder.notify_attempts).where(Reminder.id.in_(ids))
    )
    assert set(attempts) == {1}


async def test_sent_notifications_are_published(async_db_session: AsyncSession) -> None:
    own_bus = EventBus()
    probe = sqlsandbox.Probe("notifications")
    own_bus.subscribe("notification.*", probe)
    await own_bus.start()
    pool = NotificationPool(size=1, notifier=Outbox(), bus=own_bus)
    await pool.start()
    try:
        pool.enqueue(5)
        event = await probe.received(timeout=5)
    finally:
        await pool.stop()
        await own_bus.stop()
    assert isinstance(event, Event)
    assert event.data == {"reminder_id": 5, "to": "bob@example.com"}


async def test_stopping_leaves_queued_jobs_queued() -> None:
    pool = NotificationPool(size=1, notifier=Outbox())
    for reminder_id in (1, 2, 3):
        pool.enqueue(reminder_id)
    assert pool.pending == 3
    await pool.stop()
    assert pool.pending == 3
    assert not pool.running


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        NotificationPool(size=0, notifier=Outbox())


# -- through the HTTP API ---------------------------------------------------------------


async def test_dispatch_due_notifies_overdue_reminders(
    client: AsyncClient, started_app: FastAPI, alice_headers: dict[str, str]
) -> None:
    response = await client.post("/notifications/dispatch-due", headers=alice_headers)
    assert response.status_code == 202
    assert response.json() == {"queued": [1, 2]}
    await started_app.state.notifications.join()
    assert sorted(n.reminder_id for n in started_app.state.outbox.sent) == [1, 2]
    for reminder_id in (1, 2):
        body = (await client.get(f"/reminders/{reminder_id}", headers=alice_headers)).json()
        assert body["notified_at"] is not None
    again = await client.post("/notifications/dispatch-due", headers=alice_headers)
    assert again.json() == {"queued": []}


async def test_dispatch_due_for_bob_has_nothing_due(client: AsyncClient) -> None:
    # Reminder 6 is past due but done; reminder 5 is due in 2099.
    response = await client.post("/notifications/dispatch-due", headers=bearer(2))
    assert response.json() == {"queued": []}


async def test_notify_now(
    client: AsyncClient,
    started_app: FastAPI,
    alice_headers: dict[str, str],
    events: sqlsandbox.Probe,
) -> None:
    response = await client.post("/reminders/4/notify", headers=alice_headers)
    assert (response.status_code, response.json()) == (202, {"queued": 4})
    event = await events.received(named("notification.sent"), timeout=5)
    assert event.data == {"reminder_id": 4, "to": "alice@example.com"}
    await started_app.state.notifications.join()
    assert [n.subject for n in started_app.state.outbox.sent] == ["Reminder: Water the plants"]


async def test_cannot_notify_about_someone_elses_reminder(
    client: AsyncClient, bob_headers: dict[str, str]
) -> None:
    assert (await client.post("/reminders/1/notify", headers=bob_headers)).status_code == 404


async def test_notifications_need_the_workers(
    bare_client: AsyncClient, alice_headers: dict[str, str]
) -> None:
    response = await bare_client.post("/reminders/1/notify", headers=alice_headers)
    assert (response.status_code, response.json()) == (503, {"detail": "Notifications are off"})


async def test_the_apps_worker_is_restarted(
    client: AsyncClient, started_app: FastAPI, alice_headers: dict[str, str]
) -> None:
    pool = started_app.state.notifications
    await asyncio.sleep(0)  # a yield, not a wait: the new workers reach their first await
    await assert_restarted("notifications-worker-1", error=RuntimeError("out of memory"))
    assert pool.restarts == 1
    response = await client.post("/reminders/1/notify", headers=alice_headers)
    assert response.status_code == 202
    await pool.join()
    assert [n.reminder_id for n in started_app.state.outbox.sent] == [1]
