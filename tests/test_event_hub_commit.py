"""EventHub's group commit over many PBXes, on SQLite and PostgreSQL.

One flush stores every PBX's messages in one write of the store, one row of its log
(thousands of small channels must not mean thousands of writes a second). Each PBX's
group then reaches the bus in one `publish_batch`, after the write. The log's merge into
per-PBX chunks keeps each PBX's messages apart, and drops a PBX deleted meanwhile.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.api.wsframe import text_frame
from cloudpbx.bus.memory import MemoryBus
from cloudpbx.domain.events import ExtStatus
from cloudpbx.domain.states import DeviceState
from cloudpbx.ports.bus import FramedBatch, WireMessage
from cloudpbx.services.events import EventHub
from cloudpbx.storage import migrate
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.events import EventStore
from cloudpbx.storage.tenants import Tenant, TenantStore

_names = itertools.count(1)
PBXES = 5


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def tenants(engine: AsyncEngine) -> list[Tenant]:
    store = TenantStore(engine)
    return [await store.create(f"Commit{next(_names)}x{i}") for i in range(PBXES)]


class Recorder:
    """A bus subscriber (the port's Sink) that notes each batch it gets, and how many
    transactions had been committed by then."""

    def __init__(self, channel: str, commits: list[int], log: list[tuple[str, list[int], int]]):
        self.channel = channel
        self.commits = commits
        self.log = log

    def deliver(self, batch: FramedBatch) -> None:
        self.log.append((self.channel, [m.id for m in batch.messages], len(self.commits)))

    def bus_closed(self) -> None:
        pass

    def missed(self) -> None:
        raise AssertionError("the in-process hub never misses a message")


def record(bus: MemoryBus, tenants: list[Tenant], commits: list[int]) -> list[Any]:
    """Subscribe a Recorder to each tenant's channel; returns the shared log."""
    log: list[tuple[str, list[int], int]] = []
    for tenant in tenants:
        channel = f"pbx_{tenant.name}"
        bus.subscribe(channel, Recorder(channel, commits, log))
    return log


class CountingStore(EventStore):
    """The real store, counting its writes (each is one transaction of its own)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.commits: list[int] = []

    async def append(self, batch: Sequence[tuple[int, WireMessage]]) -> None:
        await super().append(batch)
        self.commits.append(len(batch))


def make_hub(engine: AsyncEngine, bus: MemoryBus) -> tuple[EventHub, CountingStore]:
    # A long flush interval: the test decides when the group commit runs.
    store = CountingStore(engine)
    return EventHub(TenantStore(engine), store, bus, flush_interval=60), store


async def queue(hub: EventHub, tenant: Tenant, count: int) -> list[int]:
    ids: list[int] = []
    for n in range(count):
        ids += [m.id for m in await hub.publish(tenant, [ExtStatus(str(n), DeviceState.BUSY)])]
    return ids


async def stored_ids(engine: AsyncEngine, tenant: Tenant) -> list[int]:
    return [m.id for m in await EventStore(engine).latest(tenant.id, 1_000)]


async def test_one_flush_of_many_pbxes_is_one_transaction(engine, tenants) -> None:
    bus = MemoryBus(frame=text_frame)
    hub, store = make_hub(engine, bus)
    delivered = record(bus, tenants, store.commits)
    ids = {t.name: await queue(hub, t, 3) for t in tenants}
    assert store.commits == []
    assert await hub.flush() is True
    assert store.commits == [3 * PBXES]
    # Each PBX's group reaches its subscriber in one batch, in id order, after the commit.
    assert sorted(delivered) == sorted((f"pbx_{t.name}", ids[t.name], 1) for t in tenants)
    for tenant in tenants:
        assert await stored_ids(engine, tenant) == ids[tenant.name]
    await hub.close()


async def test_a_pbx_deleted_before_the_commit_holds_back_nobody(engine, tenants) -> None:
    bus = MemoryBus(frame=text_frame)
    hub, store = make_hub(engine, bus)
    delivered = record(bus, tenants, store.commits)
    doomed, *kept = tenants
    ids = {t.name: await queue(hub, t, 2) for t in tenants}
    await TenantStore(engine).remove(doomed.name)
    assert await hub.flush() is True
    # Whoever still listens to the deleted PBX gets its last messages, as the others do.
    assert {channel: batch for channel, batch, _ in delivered} == {
        f"pbx_{t.name}": ids[t.name] for t in tenants
    }
    await store.merge()  # the deleted PBX's messages are dropped here, without an error
    for tenant in kept:
        assert await stored_ids(engine, tenant) == ids[tenant.name]
    assert await stored_ids(engine, doomed) == []
    for tenant in kept:
        await queue(hub, tenant, 2)
    assert await hub.flush() is True
    assert store.commits == [2 * PBXES, 2 * (PBXES - 1)]
    await hub.close()
