"""The live stream under database write load: publishing never waits behind a write lock.

The stall this guards against: a publish needed a new block of ids (`reserve_event_ids`, a
write) while holding the channel's lock, so when SMS writes kept SQLite's single write
lock busy, every client of that PBX froze until the reservation got through (seconds,
with SQLite's busy handler polling). Blocks are now reserved ahead, in the background.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import orjson

from cloudpbx.domain.events import ExtStatus
from cloudpbx.domain.states import DeviceState
from cloudpbx.storage.tenants import Tenant
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running
from tests.test_ws import a_path, recv_json, ws_connect


async def timed_publish(server: LiveServer, tenant: Tenant, n: int) -> float:
    """Seconds one publish call took (the path a PBX backend waits on)."""
    started = time.monotonic()
    await server.runtime.hub.publish(tenant, [ExtStatus(str(100 + n % 900), DeviceState.IDLE)])
    return time.monotonic() - started


async def test_publishing_does_not_wait_while_another_writer_holds_the_lock(
    tmp_path: Path,
) -> None:
    """More than a block of ids is published while a foreign transaction holds SQLite's
    write lock: every publish returns at once; clients get it all once the lock is free."""
    tenants = Tenants()
    settings = make_settings(tmp_path)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        tenant = await server.runtime.tenants.require(tenants.a_name)
        block = 1_000  # the hub's id block
        async with ws_connect(server, a_path(tenants)) as ws:
            for n in range(block // 2 + 1):  # far enough into the block to reserve the next
                await timed_publish(server, tenant, n)
            await server.runtime.hub.flush()
            ids = [(await recv_json(ws))["id"] for _ in range(block // 2 + 1)]
            path = settings.effective_database_url.removeprefix("sqlite:///")
            # The blocker's calls block, so they run in a thread: the server, in this loop,
            # must go on (it may be half-way through a transaction of its own).
            blocker = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            try:
                # The next block, reserved in the background once half of this one was used.
                reserved = "SELECT event_id_reserved FROM pbx WHERE id = ?"
                for _ in range(1000):
                    row = await asyncio.to_thread(blocker.execute(reserved, (tenant.id,)).fetchone)
                    if row[0] >= 2 * block:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")  # the write lock
                durations = [await timed_publish(server, tenant, n) for n in range(block)]
                assert max(durations) < 2.0  # the busy timeout is 30 s: nobody waited on it
            finally:
                await asyncio.to_thread(blocker.execute, "ROLLBACK")
                blocker.close()

            async def rest() -> list[int]:
                return [(await recv_json(ws, 10))["id"] for _ in range(block)]

            ids += await asyncio.wait_for(rest(), 30)
    assert ids == list(range(1, len(ids) + 1))
    assert len(ids) == block + block // 2 + 1  # crossed into the next block


async def test_the_stream_keeps_flowing_under_parallel_sms_posts(tmp_path: Path) -> None:
    """8 clients post /sendSMS back to back (each SMS a few writes, then statuses) while a
    probe event is published every 20 ms: no publish waits, every probe arrives in order."""
    tenants = Tenants()
    settings = make_settings(tmp_path)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        tenant = await server.runtime.tenants.require(tenants.a_name)
        stop = asyncio.Event()
        sent_sms = 0

        async def poster() -> None:
            nonlocal sent_sms
            async with server.client(tenants.a_key) as client:
                while not stop.is_set():
                    response = await client.post(
                        "/sendSMS", data={"to": "600100200", "body": "obciazenie"}
                    )
                    assert response.status_code == 200, response.text
                    sent_sms += 1

        published_at: dict[int, float] = {}
        latencies: dict[int, float] = {}
        durations: list[float] = []
        async with ws_connect(server, a_path(tenants), max_queue=None) as ws:

            async def read_probes() -> None:
                async for raw in ws:
                    message = orjson.loads(raw)
                    if "extstatus" in message["text"]:
                        latencies[message["id"]] = time.monotonic()
                        if message["text"]["extstatus"]["exten"] == "999":
                            return  # the end marker

            reader = asyncio.create_task(read_probes())
            load = [asyncio.create_task(poster()) for _ in range(8)]
            try:
                deadline = time.monotonic() + 4.0
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    [message] = await server.runtime.hub.publish(
                        tenant, [ExtStatus("101", DeviceState.IDLE)]
                    )
                    published_at[message.id] = started
                    durations.append(time.monotonic() - started)
                    await asyncio.sleep(0.02)
            finally:
                stop.set()
                await asyncio.gather(*load)
            [end] = await server.runtime.hub.publish(tenant, [ExtStatus("999", DeviceState.IDLE)])
            published_at[end.id] = time.monotonic()
            await asyncio.wait_for(reader, 30)
    assert sent_sms >= 8  # the load really ran
    assert list(latencies) == list(published_at)  # every probe, in order
    assert max(durations) < 1.0  # generous: a write-lock wait was seconds
