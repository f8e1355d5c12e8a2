"""EventHub's group commit over many PBXes, on SQLite and PostgreSQL.

One flush stores every PBX's messages in one transaction (thousands of small channels
must not mean thousands of commits a second); only when that fails is each PBX written
alone, so that a PBX deleted meanwhile fails by itself. Each PBX's group then reaches
the bus in one `publish_batch`, after the commit.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.api.wsframe import text_frame
from cloudpbx.bus.memory import MemoryBus
from cloudpbx.domain.events import ExtStatus
from cloudpbx.domain.states import DeviceState
from cloudpbx.ports.bus import FramedBatch
from cloudpbx.services import events as events_module
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


def record(bus: MemoryBus, tenants: list[Tenant], commits: list[int]) -> list[Any]:
    """Subscribe a Recorder to each tenant's channel; returns the shared log."""
    log: list[tuple[str, list[int], int]] = []
    for tenant in tenants:
        channel = f"pbx_{tenant.name}"
        bus.subscribe(channel, Recorder(channel, commits, log))
    return log


def count_commits(engine: AsyncEngine) -> list[int]:
    """One entry per transaction the database committed (SQLAlchemy's commit event)."""
    commits: list[int] = []
    sa_event.listen(engine.sync_engine, "commit", lambda _conn: commits.append(1))
    return commits


def make_hub(engine: AsyncEngine, bus: MemoryBus) -> EventHub:
    # A long flush interval: the test decides when the group commit runs.
    return EventHub(TenantStore(engine), EventStore(engine), bus, flush_interval=60)


async def queue(hub: EventHub, tenant: Tenant, count: int) -> list[int]:
    ids: list[int] = []
    for n in range(count):
        ids += [m.id for m in await hub.publish(tenant, [ExtStatus(str(n), DeviceState.BUSY)])]
    return ids


async def stored_ids(engine: AsyncEngine, tenant: Tenant) -> list[int]:
    return [m.id for m in await EventStore(engine).latest(tenant.id, 1_000)]


async def test_one_flush_of_many_pbxes_is_one_transaction(engine, tenants) -> None:
    commits = count_commits(engine)
    bus = MemoryBus(frame=text_frame)
    delivered = record(bus, tenants, commits)
    hub = make_hub(engine, bus)
    ids = {t.name: await queue(hub, t, 3) for t in tenants}  # ids reserved: commits too
    before = len(commits)
    assert await hub.flush() is True
    assert len(commits) == before + 1
    # Each PBX's group reaches its subscriber in one batch, in id order, after the commit.
    assert sorted(delivered) == sorted((f"pbx_{t.name}", ids[t.name], before + 1) for t in tenants)
    for tenant in tenants:
        assert await stored_ids(engine, tenant) == ids[tenant.name]
    await hub.close()


async def test_a_pbx_deleted_before_the_commit_fails_alone(engine, tenants) -> None:
    commits = count_commits(engine)
    bus = MemoryBus(frame=text_frame)
    delivered = record(bus, tenants, commits)
    hub = make_hub(engine, bus)
    doomed, *kept = tenants
    ids = {t.name: await queue(hub, t, 2) for t in tenants}
    await TenantStore(engine).remove(doomed.name)  # its rows now break the shared insert
    assert await hub.flush() is False
    for tenant in kept:
        assert await stored_ids(engine, tenant) == ids[tenant.name]
    assert {channel: batch for channel, batch, _ in delivered} == {
        f"pbx_{t.name}": ids[t.name] for t in kept
    }
    # The deleted PBX's messages are retried, never delivered, and dropped in the end.
    for _ in range(events_module.MAX_ATTEMPTS - 1):
        assert await hub.flush() is False
    assert await hub.flush() is True
    assert f"pbx_{doomed.name}" not in {channel for channel, _, _ in delivered}
    await hub.close()


async def test_later_flushes_share_one_transaction_again(engine, tenants) -> None:
    commits = count_commits(engine)
    hub = make_hub(engine, MemoryBus(frame=text_frame))
    doomed, *kept = tenants
    await queue(hub, doomed, 1)
    await TenantStore(engine).remove(doomed.name)
    for _ in range(events_module.MAX_ATTEMPTS):
        await hub.flush()  # the deleted PBX's message is given up
    for tenant in kept:
        await queue(hub, tenant, 2)
    before = len(commits)
    assert await hub.flush() is True
    assert len(commits) == before + 1
    await hub.close()
