"""The event bus: subscribers, delivery once per event, failures, the periodic cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from helpers import ALICE, named
from httpx import AsyncClient
from reminders.events import Event, EventBus, bus

import sqlsandbox
from sqlsandbox.runtime import run_iterations


class Clock:
    """A settable clock for the bus's bookkeeping."""

    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def event_bus(clock: Clock) -> AsyncIterator[EventBus]:
    """A bus of the test's own, started, with a cleanup every 60 s of events older than 1 h."""
    own = EventBus(cleanup_interval=60, max_age=3600, clock=clock)
    await own.start()
    yield own
    await own.stop()


async def test_a_subscriber_receives_what_is_published(event_bus: EventBus) -> None:
    probe = sqlsandbox.Probe("subscriber")
    event_bus.subscribe("reminder.created", probe)
    event = Event("reminder.created", {"id": 7})
    assert event_bus.publish(event) is True
    assert await probe.received(timeout=5) is event


@pytest.mark.parametrize(
    ("pattern", "name", "delivered"),
    [
        ("reminder.created", "reminder.created", True),
        ("reminder.created", "reminder.completed", False),
        ("reminder.*", "reminder.completed", True),
        ("reminder.*", "list.created", False),
        ("*", "anything.at.all", True),
        ("*.created", "tag.created", True),
        ("*.created", "tag.deleted", False),
        ("tag.?etached", "tag.detached", True),
        ("tag.?etached", "tag.attached", False),
        ("user.[ad]*", "user.deactivated", True),
    ],
)
async def test_patterns_pick_events(
    event_bus: EventBus, pattern: str, name: str, delivered: bool
) -> None:
    probe = sqlsandbox.Probe(pattern)
    event_bus.subscribe(pattern, probe)
    assert await event_bus.deliver(Event(name)) == (1 if delivered else 0)
    assert len(probe) == (1 if delivered else 0)


async def test_sync_and_async_subscribers(event_bus: EventBus) -> None:
    seen: list[str] = []

    def sync_handler(event: Event) -> None:
        seen.append(f"sync {event.name}")

    async def async_handler(event: Event) -> None:
        seen.append(f"async {event.name}")

    event_bus.subscribe("ping", sync_handler)
    event_bus.subscribe("ping", async_handler)
    event_bus.publish(Event("ping"))
    await event_bus.drain()
    assert seen == ["sync ping", "async ping"]


async def test_the_decorator_subscribes(event_bus: EventBus) -> None:
    probe = sqlsandbox.Probe("decorated")

    @event_bus.on("list.*")
    async def on_list(event: Event) -> None:
        probe(event.name)

    event_bus.publish(Event("list.created"))
    assert await probe.received(timeout=5) == "list.created"


async def test_an_event_is_delivered_once_per_id(event_bus: EventBus) -> None:
    probe = sqlsandbox.Probe("once")
    event_bus.subscribe("*", probe)
    event = Event("reminder.created")
    for _ in range(3):
        event_bus.publish(event)
    await event_bus.drain()
    assert probe.messages == [event]


async def test_a_failing_subscriber_does_not_stop_the_others(event_bus: EventBus) -> None:
    probe = sqlsandbox.Probe("healthy")

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    event_bus.subscribe("*", broken)
    event_bus.subscribe("*", probe)
    event = Event("reminder.deleted")
    event_bus.publish(event)
    assert await probe.received(timeout=5) is event
    await event_bus.drain()
    assert [(failed.name, str(error)) for failed, error in event_bus.failures] == [
        ("reminder.deleted", "subscriber bug")
    ]
    # The bus keeps going.
    event_bus.publish(Event("reminder.created"))
    assert (await probe.received(timeout=5)).name == "reminder.created"


async def test_unsubscribed_handlers_hear_nothing(event_bus: EventBus) -> None:
    probe = sqlsandbox.Probe("gone")
    token = event_bus.subscribe("*", probe)
    event_bus.unsubscribe(token)
    event_bus.publish(Event("reminder.created"))
    await event_bus.drain()
    probe.assert_nothing_received()


async def test_events_are_delivered_in_order(event_bus: EventBus) -> None:
    probe = sqlsandbox.Probe("order")
    event_bus.subscribe("*", lambda event: probe(event.data["n"]))
    for n in range(20):
        event_bus.publish(Event("tick", {"n": n}))
    await event_bus.drain()
    assert probe.messages == list(range(20))


async def test_a_stopped_bus_drops_events() -> None:
    stopped = EventBus()
    assert stopped.publish(Event("lost")) is False
    assert stopped.dropped == 1


async def test_stop_delivers_what_is_queued_first(clock: Clock) -> None:
    own = EventBus(clock=clock)
    probe = sqlsandbox.Probe("late")
    own.subscribe("*", probe)
    await own.start()
    for n in range(5):
        own.publish(Event("queued", {"n": n}))
    await own.stop()
    assert [event.data["n"] for event in probe.messages] == [0, 1, 2, 3, 4]
    assert not own.running


async def test_start_runs_a_dispatcher_and_a_cleanup_task(event_bus: EventBus) -> None:
    import asyncio

    names = {task.get_name() for task in asyncio.all_tasks()}
    assert {"event-bus-dispatcher", "event-bus-cleanup"} <= names
    await event_bus.start()  # starting twice is harmless
    assert sum(1 for task in asyncio.all_tasks() if task.get_name() == "event-bus-dispatcher") == 1


# -- cleanup of processed event ids ----------------------------------------------------


@pytest.mark.parametrize(
    ("age", "kept"),
    [
        (timedelta(0), True),
        (timedelta(minutes=30), True),
        (timedelta(minutes=59, seconds=59), True),
        (timedelta(hours=1, seconds=1), False),
        (timedelta(hours=2), False),
        (timedelta(days=1), False),
    ],
)
async def test_cleanup_forgets_events_older_than_an_hour(
    event_bus: EventBus, clock: Clock, age: timedelta, kept: bool
) -> None:
    event = Event("old")
    clock.now -= age
    await event_bus.deliver(event)
    clock.now += age
    assert event_bus.cleanup() == (0 if kept else 1)
    assert (event.id in event_bus.processed) is kept


async def test_a_forgotten_event_can_be_delivered_again(event_bus: EventBus, clock: Clock) -> None:
    probe = sqlsandbox.Probe("again")
    event_bus.subscribe("*", probe)
    event = Event("retry")
    await event_bus.deliver(event)
    assert await event_bus.deliver(event) == 0
    clock.now += timedelta(hours=2)
    event_bus.cleanup()
    assert await event_bus.deliver(event) == 1
    assert len(probe) == 2


@pytest.mark.parametrize("iterations", [1, 2, 3])
async def test_the_cleanup_task_runs_every_interval(clock: Clock, iterations: int) -> None:
    own = EventBus(cleanup_interval=60, max_age=3600, clock=clock)
    old, recent = Event("old"), Event("recent")
    clock.now -= timedelta(hours=3)
    await own.deliver(old)
    clock.now += timedelta(hours=3)
    await own.deliver(recent)
    # The loop sleeps first: its n-th sleep comes after n - 1 cleanups.
    run = await run_iterations(own._cleanup_loop, iterations + 1)
    assert run.sleeps == (60,) * (iterations + 1)
    assert set(own.processed) == {recent.id}


async def test_the_cleanup_task_waits_before_its_first_pass(clock: Clock) -> None:
    own = EventBus(cleanup_interval=300, max_age=3600, clock=clock)
    clock.now -= timedelta(hours=3)
    old = Event("old")
    await own.deliver(old)
    clock.now += timedelta(hours=3)
    run = await run_iterations(own._cleanup_loop, 1)
    assert run.sleeps == (300,)
    assert old.id in own.processed


# -- the app's bus: events from HTTP, and the audit subscriber ----------------------------


async def test_the_app_bus_runs_only_during_the_lifespan(client: AsyncClient) -> None:
    assert bus.running


async def test_the_app_bus_is_stopped_without_a_lifespan(bare_client: AsyncClient) -> None:
    assert not bus.running


@pytest.mark.parametrize(
    ("method", "path", "body", "event_name"),
    [
        ("post", "/lists", {"name": "Garden"}, "list.created"),
        ("patch", "/lists/1", {"name": "House"}, "list.updated"),
        ("delete", "/lists/1", None, "list.deleted"),
        ("post", "/tags", {"name": "garden"}, "tag.created"),
        ("patch", "/tags/1", {"name": "shopping"}, "tag.renamed"),
        ("delete", "/tags/2", None, "tag.deleted"),
        ("patch", "/users/me", {"name": "Alice L."}, "user.updated"),
        ("patch", "/admin/users/2", {"is_active": False}, "user.deactivated"),
    ],
)
async def test_http_writes_publish_events(
    client: AsyncClient,
    alice_headers: dict[str, str],
    events: sqlsandbox.Probe,
    method: str,
    path: str,
    body: dict[str, object] | None,
    event_name: str,
) -> None:
    kwargs = {"json": body} if body is not None else {}
    response = await getattr(client, method)(path, headers=alice_headers, **kwargs)
    assert response.status_code < 300
    event = await events.received(named(event_name), timeout=5)
    assert event.actor_id == ALICE


async def test_registration_publishes_an_event(
    client: AsyncClient, events: sqlsandbox.Probe
) -> None:
    body = {"email": "eve@example.com", "password": "s3cret-pass", "name": "Eve"}
    created = (await client.post("/auth/register", json=body)).json()
    event = await events.received(named("user.registered"), timeout=5)
    assert event.data == {"id": created["id"], "email": "eve@example.com"}


async def test_failed_writes_publish_nothing(
    client: AsyncClient, alice_headers: dict[str, str], events: sqlsandbox.Probe
) -> None:
    await client.post("/lists", headers=alice_headers, json={"name": "Home"})  # 409
    await client.post("/tags", headers=alice_headers, json={"name": "errands"})  # 409
    await client.delete("/reminders/5", headers=alice_headers)  # 404
    await bus.drain()
    events.assert_nothing_received()


@pytest.mark.parametrize(
    ("method", "path", "body", "action"),
    [
        ("post", "/lists", {"name": "Garden"}, "list.created"),
        ("delete", "/tags/2", None, "tag.deleted"),
        ("patch", "/users/me", {"name": "Alice L."}, "user.updated"),
    ],
)
async def test_the_audit_subscriber_records_events(
    client: AsyncClient,
    alice_headers: dict[str, str],
    method: str,
    path: str,
    body: dict[str, object] | None,
    action: str,
) -> None:
    kwargs = {"json": body} if body is not None else {}
    await getattr(client, method)(path, headers=alice_headers, **kwargs)
    await bus.drain()
    trail = (await client.get("/audit", headers=alice_headers)).json()
    assert [row["action"] for row in trail] == [action]
    assert trail[0]["actor_id"] == ALICE


async def test_audit_filters(client: AsyncClient, alice_headers: dict[str, str]) -> None:
    await client.post("/reminders/1/complete", headers=alice_headers)
    await client.post("/reminders/2/complete", headers=alice_headers)
    await client.delete("/reminders/4", headers=alice_headers)
    await bus.drain()
    by_action = (await client.get("/audit?action=reminder.completed", headers=alice_headers)).json()
    assert [row["entity_id"] for row in by_action] == [2, 1]  # newest first
    by_entity = (
        await client.get("/audit?entity=reminder&entity_id=4", headers=alice_headers)
    ).json()
    assert [row["action"] for row in by_entity] == ["reminder.deleted"]
    assert len((await client.get("/audit?limit=1", headers=alice_headers)).json()) == 1
