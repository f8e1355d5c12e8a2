"""Connector fail-over on the REAL Asterisk lab: three `cloudpbx serve` processes on one
PostgreSQL database and one JetStream stream, a WebSocket client on each, a short lease.

101 calls 104 (which rings until answered); the process holding the AMI connector's lease
is killed -9 while 104 rings; another process takes the lease and resyncs; 104 then
answers and hangs up. Every surviving client gets those changes, with the same ids in the
same order, and ends where Asterisk is (both lamps idle). The gap (kill -> the first
message from the new connector at a client) is printed, and bounded generously only.
"""

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
from websockets.asyncio.client import ClientConnection, connect

from cloudpbx.lab import Lab
from tests.engine_support import NATS_URL, own_stream
from tests.processes import free_port, fresh_pg_database, seed_database, serve, stop, wait_healthy
from tests.test_asterisk_e2e import PBX, asterisk_now, clean, lab_server_toml, phone

KEY = "LabFailoverKey01"
TTL = 1.5
NODES = 3
GAP_BOUND_S = 20.0
"""Generous: the lease's TTL plus a resync, on a machine whose cores may be busy."""


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


@dataclass
class Watcher:
    """A client of one node: every message with the (loop) time it came, ids checked."""

    ws: ClientConnection
    got: list[tuple[float, dict[str, Any], str]] = field(default_factory=list)

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                assert isinstance(raw, str)
                message = json.loads(raw)
                if self.got:
                    last = self.got[-1][1]["id"]
                    assert message["id"] > last, f"id {message['id']} after {last}"
                self.got.append((loop.time(), message, raw))

    def states(self, ext: int) -> list[int]:
        peer = f"{PBX}-{ext}"
        return [
            m["text"]["subscriber"]["statusValue"]
            for _, m, _ in self.got
            if m["text"].get("subscriber", {}).get("peer") == peer
        ]

    def after(self, moment: float) -> list[dict[str, Any]]:
        return [m for at, m, _ in self.got if at > moment]


async def until(predicate: Any, seconds: float, what: str) -> None:
    for _ in range(int(seconds * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds:g} s: {what}")


def write_config(lab: Lab, path: Path) -> Path:
    path.write_text(
        f"""{lab_server_toml(lab, 1.0)}
[[servers.pbx]]
name = "{PBX}"
"""
    )
    return path


@dataclass
class Cluster:
    url: str
    lease: str
    nodes: list[Node]

    async def term(self) -> tuple[int, int] | None:
        """(pid of the holder, token) of the connector's lease."""
        conn = await asyncpg.connect(self.url)
        try:
            row = await conn.fetchrow("SELECT holder, token FROM lease WHERE name = $1", self.lease)
        finally:
            await conn.close()
        return None if row is None else (int(row["holder"].split(":")[1]), row["token"])

    async def holder(self, token: int, seconds: float = 30) -> Node:
        for _ in range(int(seconds * 20)):
            term = await self.term()
            if term is not None and term[1] == token:
                return next(node for node in self.nodes if node.proc.pid == term[0])
            await asyncio.sleep(0.05)
        raise AssertionError(f"no holder of term {token}: {await self.term()}")


@contextlib.asynccontextmanager
async def cluster(lab: Lab, tmp_path: Path, stream: str) -> AsyncIterator[Cluster]:
    config = write_config(lab, tmp_path / "asterisk.toml")
    host, port = lab.ami_address
    async with fresh_pg_database() as url:
        await seed_database(url, tmp_path, PBX, KEY)
        nodes: list[Node] = []
        try:
            for index in range(NODES):
                node_port = free_port()
                log = tmp_path / f"node{index}.log"
                env = {
                    "CLOUDPBX_DATABASE_URL": url,
                    "CLOUDPBX_BACKEND": "asterisk",
                    "CLOUDPBX_ASTERISK_CONFIG": str(config),
                    "CLOUDPBX_LEASE_TTL": str(TTL),
                    "CLOUDPBX_EVENT_ENGINE_URL": NATS_URL,
                    "CLOUDPBX_EVENT_ENGINE_STREAM": stream,
                }
                args = ["--port", str(node_port), "--data", str(tmp_path / f"node{index}")]
                nodes.append(Node(serve(args, env, log), node_port, log))
            for node in nodes:
                await wait_healthy(node.port, node.proc)
            yield Cluster(url, f"asterisk:{host}:{port}", nodes)
        finally:
            for node in nodes:
                await stop(node.proc)


@contextlib.asynccontextmanager
async def watching(nodes: list[Node]) -> AsyncIterator[list[Watcher]]:
    async with contextlib.AsyncExitStack() as stack:
        watchers = []
        for node in nodes:
            url = f"ws://127.0.0.1:{node.port}/ws/pbx_{PBX}?pbxkey={KEY}"
            ws = await stack.enter_async_context(connect(url, proxy=None))
            watcher = Watcher(ws)
            task = asyncio.create_task(watcher.read())
            stack.callback(task.cancel)
            watchers.append(watcher)
        yield watchers


async def test_the_connectors_process_dies_mid_call(lab: Lab, tmp_path: Path) -> None:
    async with (
        clean(lab),
        own_stream() as stream,
        cluster(lab, tmp_path, stream) as c,
        watching(c.nodes) as watchers,
    ):
        holder = await c.holder(token=1)
        await phone(lab, 101, "dial", "104")
        await until(
            lambda: all(w.states(104)[-1:] == [8] for w in watchers),
            20,
            "104 ringing at every client",
        )

        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        os.kill(holder.proc.pid, signal.SIGKILL)
        index = c.nodes.index(holder)
        survivors = [w for i, w in enumerate(watchers) if i != index]
        new_holder = await c.holder(token=2)
        assert new_holder is not holder
        await until(
            lambda: all(w.after(killed_at) for w in survivors),
            GAP_BOUND_S,
            "the new connector's resync at every surviving client",
        )
        first_new = [next(at for at, _, _ in w.got if at > killed_at) for w in survivors]
        gap = min(first_new) - killed_at
        # The resync shows the call as it is: 104 still ringing.
        assert all(w.states(104)[-1:] == [8] for w in survivors)

        await phone(lab, 104, "answer")
        await until(
            lambda: all(w.states(104)[-1:] == [1] for w in survivors),
            20,
            "104 answered at every surviving client",
        )
        await phone(lab, 104, "hangup")
        await until(
            lambda: all(w.states(101)[-1:] == [0] and w.states(104)[-1:] == [0] for w in survivors),
            20,
            "both lamps idle at every surviving client",
        )
        await asyncio.sleep(1.0)  # anything late would show now

    # The same stream at every survivor, over what all of them saw.
    first = max(w.got[0][1]["id"] for w in survivors)
    streams = [[raw for _, m, raw in w.got if m["id"] >= first] for w in survivors]
    assert len(streams[0]) >= 4
    assert all(stream == streams[0] for stream in streams[1:])
    _, devices = await asterisk_now(lab, 101, 104)
    assert devices == {101: 0, 104: 0}
    print(
        f"lab fail-over: kill -9 -> first message of the new connector at a client "
        f"{gap:.2f} s (lease ttl {TTL} s); {len(streams[0])} messages identical at "
        f"{len(survivors)} surviving clients"
    )
    assert gap < GAP_BOUND_S
