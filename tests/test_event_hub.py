"""EventHub: id blocks, the history ring, replay, store-then-publish, prune, close, crashes."""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.api.wsframe import text_frame
from cloudpbx.bus.memory import MemoryBus
from cloudpbx.domain.events import Event, ExtStatus, QueueCalls, Subscriber
from cloudpbx.domain.states import DeviceState
from cloudpbx.ports.bus import WireMessage
from cloudpbx.services import events as events_module
from cloudpbx.services.events import EventHub
from cloudpbx.storage import migrate
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.events import EventStore
from cloudpbx.storage.tables import pbx
from cloudpbx.storage.tenants import Tenant, TenantStore
from tests.recording_sink import record

_names = itertools.count(1)


@pytest.fixture(scope="module")
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncEngine]:
    path = tmp_path_factory.mktemp("hub") / "hub.db"
    engine = create_engine(f"sqlite:///{path}")
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def tenant(engine: AsyncEngine) -> Tenant:
    """A fresh PBX per test: its ids start from 1."""
    return await TenantStore(engine).create(f"Hub{next(_names)}")


class CountingTenants(TenantStore):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.reservations = 0

    async def reserve_event_ids(self, pbx_id: int, block: int) -> int:
        self.reservations += 1
        return await super().reserve_event_ids(pbx_id, block)


class ControlledStore(EventStore):
    """The real store, with hooks to slow down, block or fail writes and prunes."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.append_delay = 0.0
        self.append_started = asyncio.Event()
        self.fail_all = False
        self.prune_gate: asyncio.Event | None = None
        self.prune_entered = asyncio.Event()
        self.prunes: list[tuple[int, int]] = []
        self.loads = 0

    async def latest(self, pbx_id: int, limit: int) -> list[WireMessage]:
        self.loads += 1
        await asyncio.sleep(0.01)  # a slow first load: concurrent callers overlap in it
        return await super().latest(pbx_id, limit)

    async def append(self, batch: Sequence[tuple[int, WireMessage]]) -> None:
        self.append_started.set()
        if self.append_delay:
            await asyncio.sleep(self.append_delay)
        if self.fail_all:
            raise OSError("database unavailable")
        await super().append(batch)

    async def prune(self, pbx_id: int, keep_after_id: int) -> int:
        self.prune_entered.set()
        if self.prune_gate is not None:
            await self.prune_gate.wait()
        self.prunes.append((pbx_id, keep_after_id))
        return await super().prune(pbx_id, keep_after_id)


def make_hub(
    engine: AsyncEngine, **options: Any
) -> tuple[EventHub, CountingTenants, ControlledStore]:
    tenants = CountingTenants(engine)
    store = ControlledStore(engine)
    settings: dict[str, Any] = {"history_size": 5, "id_block": 3, "flush_interval": 0.01}
    settings.update(options)
    return EventHub(tenants, store, MemoryBus(frame=text_frame), **settings), tenants, store


def ext(n: int) -> ExtStatus:
    return ExtStatus(str(n), DeviceState.IN_USE)


async def queue_n(hub: EventHub, tenant: Tenant, count: int) -> list[int]:
    """Publish `count` messages: numbered and queued for the next group commit."""
    ids: list[int] = []
    for n in range(count):
        ids += [m.id for m in await hub.publish(tenant, [ext(n)])]
    return ids


async def publish_n(hub: EventHub, tenant: Tenant, count: int) -> list[int]:
    """Publish `count` messages and commit them (stored, in the history, on the bus)."""
    ids = await queue_n(hub, tenant, count)
    await hub.flush()
    return ids


async def stored_ids(engine: AsyncEngine, tenant: Tenant) -> list[int]:
    return [m.id for m in await EventStore(engine).latest(tenant.id, 100_000)]


async def reserved(engine: AsyncEngine, tenant: Tenant) -> int:
    async with engine.connect() as conn:
        query = select(pbx.c.event_id_reserved).where(pbx.c.id == tenant.id)
        return int((await conn.execute(query)).scalar_one())


# ------------------------------------------------------------------ ids and blocks


async def test_ids_start_at_1_and_are_reserved_a_block_at_a_time(engine, tenant) -> None:
    hub, tenants, _ = make_hub(engine, id_block=3)
    assert await publish_n(hub, tenant, 7) == [1, 2, 3, 4, 5, 6, 7]
    assert tenants.reservations == 3  # 1-3, 4-6, 7-9
    assert await reserved(engine, tenant) == 9
    await hub.close()
    assert await reserved(engine, tenant) == 7  # the unused 8 and 9 are given back


def one_change(tenant: Tenant) -> list[Event]:
    return [
        Subscriber(f"{tenant.name}-101", DeviceState.RINGING),
        ExtStatus("101", DeviceState.RINGING),
        ExtStatus("102", DeviceState.IDLE),
        QueueCalls("K", 3),
    ]


async def test_a_message_carries_its_id_channel_and_one_event(engine, tenant) -> None:
    hub, _, _ = make_hub(engine)
    subscription = record(hub.bus, f"pbx_{tenant.name}")
    messages = await hub.publish(tenant, one_change(tenant))
    assert [m.id for m in messages] == [1, 2, 3, 4]
    channel = f"pbx_{tenant.name}"
    assert [orjson.loads(m.data) for m in messages] == [
        {
            "id": 1,
            "channel": channel,
            "text": {"subscriber": {"peer": f"{tenant.name}-101", "statusValue": 8}},
        },
        {"id": 2, "channel": channel, "text": {"extstatus": {"exten": "101", "status": 8}}},
        {"id": 3, "channel": channel, "text": {"extstatus": {"exten": "102", "status": 0}}},
        {"id": 4, "channel": channel, "text": {"queue": {"peer": "K", "calls": "3"}}},
    ]
    await hub.flush()
    assert subscription.drain() == messages
    await hub.close()


async def test_bundling_is_an_opt_in_that_groups_one_change(engine, tenant) -> None:
    hub, _, _ = make_hub(engine, bundle=True)
    subscription = record(hub.bus, f"pbx_{tenant.name}")
    messages = await hub.publish(tenant, one_change(tenant))
    assert [m.id for m in messages] == [1, 2]
    decoded = [orjson.loads(m.data) for m in messages]
    assert decoded == [
        {
            "id": 1,
            "channel": f"pbx_{tenant.name}",
            "text": {
                "subscriber": {"peer": f"{tenant.name}-101", "statusValue": 8},
                "extstatus": {"exten": "101", "status": 8},
            },
        },
        {
            "id": 2,
            "channel": f"pbx_{tenant.name}",
            "text": {
                "extstatus": {"exten": "102", "status": 0},
                "queue": {"peer": "K", "calls": "3"},
            },
        },
    ]
    await hub.flush()
    assert subscription.drain() == messages
    assert await hub.publish(tenant, []) == []
    await hub.close()


async def test_pbxes_have_their_own_ids(engine, tenant) -> None:
    other = await TenantStore(engine).create(f"Hub{next(_names)}")
    hub, _, _ = make_hub(engine)
    assert await publish_n(hub, tenant, 2) == [1, 2]
    assert await publish_n(hub, other, 2) == [1, 2]
    assert await publish_n(hub, tenant, 1) == [3]
    await hub.close()


async def test_concurrent_publishers_get_unique_ids_delivered_in_order(engine, tenant) -> None:
    hub, _, _ = make_hub(engine, id_block=4, history_size=1_000)
    subscription = record(hub.bus, f"pbx_{tenant.name}")
    results = await asyncio.gather(*(publish_n(hub, tenant, 25) for _ in range(8)))
    ids = sorted(i for r in results for i in r)
    assert ids == list(range(1, 201))
    await hub.flush()
    assert [m.id for m in subscription.drain()] == ids  # bus order == id order
    await hub.close()


async def test_a_clean_close_and_restart_continue_without_a_gap(engine, tenant) -> None:
    hub, _, _ = make_hub(engine, id_block=100)
    assert await publish_n(hub, tenant, 3) == [1, 2, 3]
    await hub.close()
    again, _, _ = make_hub(engine, id_block=100)
    assert await publish_n(again, tenant, 2) == [4, 5]
    await again.close()


async def test_a_crash_skips_the_rest_of_the_block_but_never_reuses(engine, tenant) -> None:
    crashed, _, _ = make_hub(engine, id_block=100)
    assert await publish_n(crashed, tenant, 3) == [1, 2, 3]
    await crashed.flush()
    # No close(): a new process starts over the same database.
    restarted, _, _ = make_hub(engine, id_block=100)
    assert await publish_n(restarted, tenant, 2) == [101, 102]
    # The crashed process's late close must not hand back ids someone else now owns.
    await crashed.close()
    assert await reserved(engine, tenant) == 200
    await restarted.close()
    assert await reserved(engine, tenant) == 102
    third, _, _ = make_hub(engine, id_block=100)
    assert await publish_n(third, tenant, 1) == [103]
    await third.close()


async def test_after_a_crash_every_message_anyone_saw_resumes_completely(engine, tenant) -> None:
    crashed, _, store = make_hub(engine, id_block=100, history_size=100, flush_interval=60)
    subscription = record(crashed.bus, f"pbx_{tenant.name}")
    await publish_n(crashed, tenant, 3)
    await crashed.flush()
    store.fail_all = True  # 4 and 5 never reach the database: so nobody gets them
    await publish_n(crashed, tenant, 2)
    assert await crashed.flush() is False
    assert [m.id for m in subscription.drain()] == [1, 2, 3]
    # No close(): a new process starts over the same database.
    restarted, _, _ = make_hub(engine, id_block=100, history_size=100)
    replay = await restarted.replay_after(tenant, 1)
    assert ([m.id for m in replay.messages], replay.complete) == ([2, 3], True)
    replay = await restarted.replay_after(tenant, 3)  # the newest anyone saw
    assert (replay.messages, replay.complete) == ([], True)
    assert await publish_n(restarted, tenant, 1) == [101]
    await restarted.close()
    replay = await restarted.replay_after(tenant, 3)
    assert ([m.id for m in replay.messages], replay.complete) == ([101], True)
    store.fail_all = False


async def test_nothing_is_published_before_it_is_stored(engine, tenant) -> None:
    hub, _, store = make_hub(engine, history_size=100, flush_interval=60)
    subscription = record(hub.bus, f"pbx_{tenant.name}")
    ids = await queue_n(hub, tenant, 3)
    store.append_delay = 0.2
    flush = asyncio.create_task(hub.flush())
    await asyncio.wait_for(store.append_started.wait(), 1)
    assert subscription.drain() == []  # being written: not out yet
    assert (await hub.replay_after(tenant, 0)).messages == []
    assert await flush is True
    assert [m.id for m in subscription.drain()] == ids
    assert await stored_ids(engine, tenant) == ids
    await hub.close()


async def test_a_publish_after_close_does_not_reuse_released_ids(engine, tenant) -> None:
    hub, _, _ = make_hub(engine, id_block=100)
    assert await publish_n(hub, tenant, 2) == [1, 2]
    await hub.close()  # gives 3-100 back
    late = await publish_n(hub, tenant, 1)  # e.g. a straggler during shutdown
    other, _, _ = make_hub(engine, id_block=100)
    fresh = await publish_n(other, tenant, 1)
    assert late != fresh
    assert late[0] > 2 and fresh[0] > 2
    await other.close()
    await hub.close()


class SlowReleaseTenants(CountingTenants):
    """Giving ids back waits for `release_gate`: close() holds the channel meanwhile."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.release_gate = asyncio.Event()
        self.releasing = asyncio.Event()

    async def release_event_ids(self, pbx_id: int, reserved_up_to: int, used_up_to: int) -> None:
        self.releasing.set()
        await self.release_gate.wait()
        await super().release_event_ids(pbx_id, reserved_up_to, used_up_to)


async def test_a_publish_while_close_gives_ids_back_takes_none_of_them(engine, tenant) -> None:
    """The block still has room while close() gives it back: a publisher that came in
    then must wait its turn (no shortcut past the channel's holder), or the ids it took
    would be handed out again after the restart."""
    tenants = SlowReleaseTenants(engine)
    hub = EventHub(tenants, EventStore(engine), MemoryBus(frame=text_frame), id_block=100)
    assert await publish_n(hub, tenant, 2) == [1, 2]
    closing = asyncio.create_task(hub.close())
    await asyncio.wait_for(tenants.releasing.wait(), 5)
    late = asyncio.create_task(hub.publish(tenant, [ext(1)]))
    await asyncio.sleep(0.05)
    assert not late.done()  # behind close(), not from the block being given back
    tenants.release_gate.set()
    await closing
    (straggler,) = await late
    other, _, _ = make_hub(engine, id_block=100)
    fresh = await publish_n(other, tenant, 1)
    assert 2 < straggler.id < fresh[0]  # a block of its own, reserved after the release
    await other.close()
    await hub.close()


async def test_a_publisher_behind_one_waiting_for_ids_keeps_the_call_order(engine, tenant) -> None:
    """One publisher waits for a new block with two events; one that comes later with
    room in sight (after the first's ids) still gets later ids."""
    hub, tenants, _ = make_hub(engine, id_block=3)
    gate = asyncio.Event()
    reserve = tenants.reserve_event_ids

    async def slow_reserve(pbx_id: int, block: int) -> int:
        await gate.wait()
        return await reserve(pbx_id, block)

    assert await queue_n(hub, tenant, 2) == [1, 2]  # the spare block's reservation is due
    tenants.reserve_event_ids = slow_reserve  # type: ignore[method-assign]
    hub._channels[tenant.id].spare = None  # (its first attempt: forgotten, the next waits)
    first = asyncio.create_task(hub.publish(tenant, [ext(1), ext(2)]))  # id 3, then waits
    await asyncio.sleep(0.02)
    second = asyncio.create_task(hub.publish(tenant, [ext(3)]))
    await asyncio.sleep(0.02)
    assert not second.done()
    gate.set()
    ids = [m.id for m in await first] + [m.id for m in await second]
    assert ids == sorted(ids) and ids[0] == 3
    await hub.close()


async def test_a_failed_reservation_keeps_what_already_went_out(engine, tenant) -> None:
    hub, tenants, _ = make_hub(engine, id_block=2, flush_interval=0.001, history_size=100)
    original = tenants.reserve_event_ids

    async def reserve(pbx_id: int, block: int) -> int:
        if tenants.reservations >= 1:
            raise OSError("database unavailable")
        return await original(pbx_id, block)

    tenants.reserve_event_ids = reserve  # type: ignore[method-assign]
    subscription = record(hub.bus, f"pbx_{tenant.name}")
    with pytest.raises(OSError):
        await hub.publish(tenant, [ext(1), ext(2), ext(3)])  # the third needs a new block
    for _ in range(100):
        if await stored_ids(engine, tenant) == [1, 2]:
            break
        await asyncio.sleep(0.01)
    assert await stored_ids(engine, tenant) == [1, 2]
    await hub.flush()
    assert [m.id for m in subscription.drain()] == [1, 2]
    tenants.reserve_event_ids = original  # type: ignore[method-assign]
    assert await publish_n(hub, tenant, 1) == [3]
    await hub.close()


# -------------------------------------------------------------- history and replay


async def test_history_keeps_the_newest_and_replay_reports_gaps(engine, tenant) -> None:
    hub, _, _ = make_hub(engine, history_size=5)
    await publish_n(hub, tenant, 12)  # ids 1..12, 8..12 kept
    replay = await hub.replay_after(tenant, 2)
    assert [m.id for m in replay.messages] == [8, 9, 10, 11, 12]
    assert not replay.complete
    assert replay.newest == 12
    replay = await hub.replay_after(tenant, 7)
    assert [m.id for m in replay.messages] == [8, 9, 10, 11, 12]
    assert replay.complete
    replay = await hub.replay_after(tenant, 10)
    assert ([m.id for m in replay.messages], replay.complete) == ([11, 12], True)
    for last in (12, 50):
        replay = await hub.replay_after(tenant, last)
        assert (replay.messages, replay.complete, replay.newest) == ([], True, 12)
    assert await hub.last_id(tenant) == 12
    await hub.close()


async def test_replay_of_an_empty_or_young_history(engine, tenant) -> None:
    hub, _, _ = make_hub(engine, history_size=5)
    replay = await hub.replay_after(tenant, 0)
    assert (replay.messages, replay.complete, replay.newest) == ([], True, 0)
    assert await hub.last_id(tenant) == 0
    await publish_n(hub, tenant, 3)
    replay = await hub.replay_after(tenant, 0)
    assert ([m.id for m in replay.messages], replay.complete) == ([1, 2, 3], True)
    await hub.close()


async def test_history_is_loaded_from_the_database(engine, tenant) -> None:
    first, _, _ = make_hub(engine, history_size=5, id_block=100)
    await publish_n(first, tenant, 4)
    await first.close()
    second, _, _ = make_hub(engine, history_size=5, id_block=100)
    replay = await second.replay_after(tenant, 1)
    assert ([m.id for m in replay.messages], replay.complete) == ([2, 3, 4], True)
    assert await publish_n(second, tenant, 3) == [5, 6, 7]
    replay = await second.replay_after(tenant, 2)
    assert ([m.id for m in replay.messages], replay.complete) == ([3, 4, 5, 6, 7], True)
    replay = await second.replay_after(tenant, 1)  # 2 fell out of the history
    assert ([m.id for m in replay.messages], replay.complete) == ([3, 4, 5, 6, 7], False)
    await second.close()


async def test_concurrent_first_use_loads_one_channel(engine, tenant) -> None:
    hub, _, store = make_hub(engine)
    results = await asyncio.gather(
        hub.publish(tenant, [ext(1)]), hub.replay_after(tenant, 0), hub.publish(tenant, [ext(2)])
    )
    assert store.loads == 1  # one load shared, not one per caller
    # Two concurrent publishes: either may go first, but the ids are 1 and 2.
    assert sorted([m.id for m in results[0]] + [m.id for m in results[2]]) == [1, 2]
    await hub.flush()
    assert [m.id for m in (await hub.replay_after(tenant, 0)).messages] == [1, 2]
    await hub.close()


# ---------------------------------------------------------------- write-behind


async def test_messages_are_stored_by_a_group_commit_in_the_background(engine, tenant) -> None:
    hub, _, store = make_hub(engine, flush_interval=0.01, history_size=100)
    store.append_delay = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    ids = await queue_n(hub, tenant, 10)
    assert loop.time() - started < 0.2  # publishing does not wait for the write
    for _ in range(100):
        if await stored_ids(engine, tenant) == ids:
            break
        await asyncio.sleep(0.01)
    assert await stored_ids(engine, tenant) == ids
    await hub.close()


async def test_prune_keeps_what_the_history_keeps(engine, tenant) -> None:
    hub, _, store = make_hub(engine, history_size=5, id_block=100)
    await publish_n(hub, tenant, 12)
    await hub.flush()
    assert store.prunes == [(tenant.id, 7)]
    assert await stored_ids(engine, tenant) == [8, 9, 10, 11, 12]
    await hub.close()


async def test_close_waits_for_a_write_in_flight_instead_of_losing_it(engine, tenant) -> None:
    hub, _, store = make_hub(engine, flush_interval=0.001, history_size=100)
    store.append_delay = 0.1
    ids = await queue_n(hub, tenant, 5)
    await asyncio.wait_for(store.append_started.wait(), 1)
    more = await queue_n(hub, tenant, 2)  # pending while the first batch is written
    await hub.close()
    assert await stored_ids(engine, tenant) == ids + more


async def test_prune_skips_full_channels_that_got_nothing_since(engine, tenant) -> None:
    """A prune goes to the channels with new messages since their last one, not to every
    channel with a full history (thousands of them, a DELETE each, every prune)."""
    hub, tenants, store = make_hub(engine, history_size=5, id_block=100)
    quiet = await tenants.create(f"Hub{next(_names)}")
    await publish_n(hub, quiet, 6)  # its history is full (a prune is due every flush here)
    assert store.prunes == [(quiet.id, 1)]
    await publish_n(hub, tenant, 6)
    await publish_n(hub, tenant, 6)
    assert store.prunes == [(quiet.id, 1), (tenant.id, 1), (tenant.id, 7)]
    await hub.close()


async def test_messages_published_while_the_flusher_prunes_are_written(engine, tenant) -> None:
    hub, _, store = make_hub(engine, flush_interval=0.001, history_size=5, id_block=100)
    store.prune_gate = asyncio.Event()
    ids = await queue_n(hub, tenant, 6)  # enough to make a prune due
    await asyncio.wait_for(store.prune_entered.wait(), 1)
    late = await queue_n(hub, tenant, 2)  # the flusher is busy pruning
    store.prune_gate.set()
    expected = (ids + late)[-5:]
    for _ in range(100):  # no further publish, no close: the flusher must go on by itself
        if (await stored_ids(engine, tenant))[-2:] == late:
            break
        await asyncio.sleep(0.01)
    assert (await stored_ids(engine, tenant))[-5:] == expected
    await hub.close()


async def test_a_channel_added_during_a_prune_does_not_break_it(engine, tenant) -> None:
    other = await TenantStore(engine).create(f"Hub{next(_names)}")
    hub, _, store = make_hub(engine, history_size=2, id_block=100, flush_interval=60)
    await queue_n(hub, tenant, 4)
    store.prune_gate = asyncio.Event()
    flush = asyncio.create_task(hub.flush())
    await asyncio.wait_for(store.prune_entered.wait(), 1)
    await queue_n(hub, other, 1)  # a new channel while flush() iterates the channels
    store.prune_gate.set()
    assert await asyncio.wait_for(flush, 1) is True
    await hub.close()
    assert await stored_ids(engine, other) == [1]


async def test_failed_writes_are_retried_in_order(engine, tenant) -> None:
    hub, _, store = make_hub(engine, flush_interval=60, history_size=100)
    store.fail_all = True
    first = await queue_n(hub, tenant, 3)
    assert await hub.flush() is False
    second = await queue_n(hub, tenant, 2)
    assert await hub.flush() is False
    store.fail_all = False
    assert await hub.flush() is True
    assert await stored_ids(engine, tenant) == first + second
    await hub.close()


async def test_writes_that_keep_failing_are_dropped_after_some_attempts(engine, tenant) -> None:
    hub, _, store = make_hub(engine, flush_interval=60, history_size=100)
    store.fail_all = True
    await queue_n(hub, tenant, 2)
    results = [await hub.flush() for _ in range(events_module.MAX_ATTEMPTS)]
    assert results == [False] * events_module.MAX_ATTEMPTS
    store.fail_all = False
    assert await hub.flush() is True  # nothing left to write
    assert await stored_ids(engine, tenant) == []
    # Never stored, so never sent: not in the history either.
    assert (await hub.replay_after(tenant, 0)).messages == []
    await hub.close()


async def test_close_with_a_dead_database_ends(engine, tenant) -> None:
    hub, _, store = make_hub(engine, flush_interval=0.001, history_size=100)
    store.fail_all = True
    await queue_n(hub, tenant, 2)
    await asyncio.wait_for(hub.close(), 3)


async def test_the_flusher_backs_off_on_failures(engine, tenant, monkeypatch) -> None:
    monkeypatch.setattr(events_module, "MAX_BACKOFF", 0.05)
    hub, _, store = make_hub(engine, flush_interval=0.001, history_size=100)
    calls = 0
    original = store.append

    async def failing(batch: Sequence[tuple[int, WireMessage]]) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OSError("database unavailable")
        await original(batch)

    store.append = failing  # type: ignore[method-assign]
    ids = await queue_n(hub, tenant, 2)
    for _ in range(100):
        if await stored_ids(engine, tenant) == ids:
            break
        await asyncio.sleep(0.01)
    assert await stored_ids(engine, tenant) == ids
    assert calls == 3
    await hub.close()


async def test_close_gives_a_dead_database_a_few_tries_not_the_outage_budget(
    engine, tenant
) -> None:
    """Live, a failing write is retried for about 30 s (a database restart loses nothing);
    at shutdown only CLOSE_ATTEMPTS times, since each try may cost a connect timeout."""
    assert events_module.CLOSE_ATTEMPTS < events_module.MAX_ATTEMPTS
    hub, _, store = make_hub(engine, flush_interval=60, history_size=100)
    store.fail_all = True
    tries = 0
    original = store.append

    async def counting(batch: Sequence[tuple[int, WireMessage]]) -> None:
        nonlocal tries
        tries += 1
        await original(batch)

    store.append = counting  # type: ignore[method-assign]
    await queue_n(hub, tenant, 2)
    await hub.close()
    assert tries == events_module.CLOSE_ATTEMPTS
    assert await stored_ids(engine, tenant) == []


async def test_the_history_adds_nothing_for_the_garbage_collector_to_scan(engine, tenant) -> None:
    """Thousands of channels keep millions of messages: as GC-tracked objects every full
    collection would scan them all, stalling the event loop for every client."""
    hub, _, _ = make_hub(engine, flush_interval=60, history_size=5_000, id_block=5_000)
    await publish_n(hub, tenant, 1)  # the channel and its first block exist
    gc.collect()
    before = len(gc.get_objects())
    await publish_n(hub, tenant, 3_000)
    gc.collect()
    assert len(gc.get_objects()) - before < 300
    replay = await hub.replay_after(tenant, 0)
    assert [m.id for m in replay.messages] == list(range(1, 3_002))
    await hub.close()
