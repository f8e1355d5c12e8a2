"""One AMI connector per Asterisk server across real `cloudpbx serve` processes on one
PostgreSQL database, against the fake AMI server: the other process stands by; it takes
over when the holder is killed -9, and when the holder hangs (SIGSTOP), in which case the
woken holder publishes nothing and its stale token is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection, connect

from cloudpbx.adapters.asterisk.framing import AmiMessage
from cloudpbx.ports.lease import Term
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.leases import SqlLeaseStore
from tests.asterisk_helpers import fake_ami_server_toml
from tests.fakes.ami_server import FakeAmi
from tests.processes import free_port, fresh_pg_database, seed_database, serve, stop, wait_healthy

PBX = "MojaCentrala"
KEY = "FailoverTestKey1"
TTL = 1.5


def busy_102() -> list[AmiMessage]:
    """What Asterisk says when extension 102 goes in use."""
    return [
        AmiMessage(
            [
                ("Event", "DeviceStateChange"),
                ("Privilege", "call,all"),
                ("Device", f"PJSIP/{PBX}-102"),
                ("State", "INUSE"),
            ]
        )
    ]


def shows_102_busy(message: dict[str, Any]) -> bool:
    subscriber = message.get("text", {}).get("subscriber", {})
    return bool(subscriber.get("peer") == f"{PBX}-102" and subscriber.get("statusValue") == 1)


@dataclass
class Node:
    """One server process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Watcher:
    """A WebSocket client that keeps every message with the (test's) time it came."""

    ws: ClientConnection
    got: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                self.got.append((loop.time(), json.loads(raw)))

    def after(self, moment: float) -> list[dict[str, Any]]:
        return [message for at, message in self.got if at > moment]


@contextlib.asynccontextmanager
async def watching(node: Node) -> AsyncIterator[Watcher]:
    url = f"ws://127.0.0.1:{node.port}/ws/pbx_{PBX}?pbxkey={KEY}"
    async with connect(url, ping_interval=None) as ws:
        watcher = Watcher(ws)
        watcher.task = asyncio.create_task(watcher._read())
        try:
            yield watcher
        finally:
            watcher.task.cancel()


@dataclass
class Cluster:
    """Two server processes on one database, both configured for the fake Asterisk."""

    url: str
    fake: FakeAmi
    nodes: list[Node]

    @property
    def lease(self) -> str:
        return f"asterisk:127.0.0.1:{self.fake.port}"

    async def term(self) -> tuple[str, int] | None:
        conn = await asyncpg.connect(self.url)
        try:
            row = await conn.fetchrow("SELECT holder, token FROM lease WHERE name = $1", self.lease)
        finally:
            await conn.close()
        return None if row is None else (row["holder"], row["token"])

    async def holder(self, token: int, seconds: float = 30) -> Node:
        """The node holding the lease's term `token`, once it has resynced."""
        for _ in range(int(seconds * 20)):
            term = await self.term()
            resyncs = len(self.fake.sent("DeviceStateList"))
            if term is not None and term[1] == token and resyncs >= token:
                pid = int(term[0].split(":")[1])
                return next(node for node in self.nodes if node.pid == pid)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no holder of term {token}: {await self.term()}")

    def event_sessions(self) -> int:
        """AMI sessions logged in with events (a connector; `/dial` sessions have none)."""
        return sum(1 for s in self.fake.live if (s.events or "off").lower() != "off")


def write_config(path: Path, port: int) -> Path:
    path.write_text(
        f"""{fake_ami_server_toml(port)}
[[servers.pbx]]
name = "{PBX}"
"""
    )
    return path


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    fake = await FakeAmi().start()
    config = write_config(tmp_path / "asterisk.toml", fake.port)
    async with fresh_pg_database() as url:
        await seed_database(url, tmp_path, PBX, KEY)
        nodes: list[Node] = []
        try:
            for index in range(2):
                port = free_port()
                log = tmp_path / f"node{index}.log"
                data = tmp_path / f"node{index}"
                proc = serve(
                    ["--port", str(port), "--data", str(data)],
                    {
                        "CLOUDPBX_DATABASE_URL": url,
                        "CLOUDPBX_BACKEND": "asterisk",
                        "CLOUDPBX_ASTERISK_CONFIG": str(config),
                        "CLOUDPBX_LEASE_TTL": str(TTL),
                    },
                    log,
                )
                nodes.append(Node(proc, port, log))
            for node in nodes:
                await wait_healthy(node.port, node.proc)
            yield Cluster(url, fake, nodes)
        finally:
            for node in nodes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGCONT)
                await stop(node.proc)
            await fake.close()


async def test_one_connector_and_take_over_after_kill_9(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        holder = await c.holder(token=1)
        standby = next(node for node in c.nodes if node is not holder)
        # Several lease periods: the standby never connects.
        for _ in range(int(TTL * 2 / 0.1)):
            assert c.event_sessions() == 1
            await asyncio.sleep(0.1)
        assert len(c.fake.sent("DeviceStateList")) == 1

        async with watching(standby) as watcher:
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            os.kill(holder.pid, signal.SIGKILL)
            assert await c.holder(token=2) is standby
            resynced_at = loop.time()
            # The new connector's resync reaches its clients: the whole state, anew.
            for _ in range(200):
                if watcher.after(killed_at):
                    break
                await asyncio.sleep(0.05)
            states = watcher.after(killed_at)
            assert any("subscriber" in m["text"] for m in states), states
            print(
                f"fail-over after kill -9: resync done {resynced_at - killed_at:.2f} s, "
                f"first state to a client {watcher.got[-1][0] - killed_at:.2f} s "
                f"(lease ttl {TTL} s)"
            )
        assert c.event_sessions() == 1


async def test_a_hung_holder_is_replaced_and_does_nothing_when_it_wakes(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        holder = await c.holder(token=1)
        standby = next(node for node in c.nodes if node is not holder)
        old = await c.term()
        assert old is not None
        stale = Term(c.lease, old[0], old[1])

        async with watching(holder) as old_side, watching(standby) as new_side:
            await asyncio.sleep(0.5)
            os.kill(holder.pid, signal.SIGSTOP)
            loop = asyncio.get_running_loop()
            stopped_at = loop.time()
            assert await c.holder(token=2) is standby
            for _ in range(200):  # the take-over's resync reached the standby's clients
                if new_side.after(stopped_at):
                    break
                await asyncio.sleep(0.05)

            # Asterisk reports a change to every session it has, the hung one's included:
            # the new connector publishes it...
            c.fake.set_extension("102", 1)
            await c.fake.emit(busy_102())
            for _ in range(200):
                if any(shows_102_busy(m) for m in new_side.after(stopped_at)):
                    break
                await asyncio.sleep(0.05)
            assert any(shows_102_busy(m) for m in new_side.after(stopped_at))

            # ...and the old one, woken up past its term, reads it and publishes nothing.
            os.kill(holder.pid, signal.SIGCONT)
            for _ in range(200):
                if "lease asterisk:" in holder.log.read_text() and c.event_sessions() == 1:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            assert old_side.after(stopped_at) == []
            assert c.event_sessions() == 1
        log = holder.log.read_text()
        assert f"lease {c.lease} lost (token 1)" in log

        # The database refuses the old term's token; the new term is untouched.
        engine = create_engine(c.url)
        try:
            store = SqlLeaseStore(engine)
            assert not await store.renew(stale, 60)
            assert not await store.is_current(stale)
            term = await c.term()
            assert term is not None and term[1] == 2
            assert int(term[0].split(":")[1]) == standby.pid
        finally:
            await engine.dispose()


async def test_dial_on_the_standby_uses_a_session_of_its_own(tmp_path: Path) -> None:
    """The standby has read no events, yet `/dial` works there: it logs in without
    events, learns cpa's device from DeviceStateList, originates, logs off; the connector
    stays the only events session, and the lease stays where it was."""
    async with cluster(tmp_path) as c:
        holder = await c.holder(token=1)
        standby = next(node for node in c.nodes if node is not holder)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{standby.port}") as client:
            ok = await client.get("/dial", params={"cpa": "101", "cpb": "200"}, headers=headers)
            unknown = await client.get(
                "/dial", params={"cpa": "109", "cpb": "200"}, headers=headers
            )
        assert ok.status_code == 200 and ok.text == "OK"
        assert unknown.status_code == 500
        [originate] = c.fake.sent("Originate")
        assert originate.value("Channel") == f"PJSIP/{PBX}-101"
        assert originate.value("Exten") == "200"
        assert ("off", True) in c.fake.logins
        assert c.event_sessions() == 1
        term = await c.term()
        assert term is not None and term[1] == 1
        assert int(term[0].split(":")[1]) == holder.pid
