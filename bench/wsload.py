"""Driving WebSocket client workers (bench.wsclients) against a server under test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import DATA_DIR, Child, CpuMeter, percentile, spawn
from bench.seed import WS_KEY, WS_PBX, channel_key, channel_pbx
from bench.servers import WsServer
from bench.wsclients import connect_deadline

MAX_BEHIND = 3.0
"""Seconds the publisher may fall behind its schedule before it stops the step."""


@dataclass
class Clients:
    children: list[Child]
    ok: int
    failed: int
    connect_seconds: float
    errors: list[str]
    deflated: int = 0
    """Connections on which the server accepted permessage-deflate."""

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]


async def open_clients(
    server: WsServer,
    total: int,
    procs: int,
    name: str,
    compression: bool,
    client: str,
    *,
    channels: bool = False,
) -> Clients:
    """`total` connections from `procs` worker processes; returns once all tried.

    All on the one bench PBX, or with `channels` one per PBX of the many-channel
    database (bench.seed.channels_database): connection n on PBX n."""
    out = DATA_DIR / "latencies"
    out.mkdir(parents=True, exist_ok=True)
    # {n}: the worker puts in its connection's number (channels only).
    url = server.ws_url(channel_pbx("{n}"), channel_key("{n}")) if channels else None
    url = url or server.ws_url(WS_PBX, WS_KEY)
    shares = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
    children = []
    started = time.monotonic()
    first = 0
    for index, share in enumerate(s for s in shares if s):
        worker = f"{name}-w{index}"
        args = ["--url", url, "--conns", str(share), "--name", worker, "--out", str(out)]
        args += ["--first", str(first)]
        first += share
        args += ["--client", client]
        if compression:
            args.append("--compression")
        children.append(await spawn(worker, "bench.wsclients", *args))
    within = connect_deadline(max(shares)) + 60
    readies = await asyncio.gather(*(c.read(within=within) for c in children))
    return Clients(
        children,
        ok=sum(r["ok"] for r in readies),
        failed=sum(r["failed"] for r in readies),
        connect_seconds=time.monotonic() - started,
        errors=[r["error"] for r in readies if r["error"]],
        deflated=sum(r.get("deflated", 0) for r in readies),
    )


async def close_clients(clients: Clients) -> None:
    async def close(child: Child) -> None:
        with contextlib.suppress(Exception):
            await child.send({"cmd": "close"})
            await child.read(within=45)
        await child.stop(grace=10)

    await asyncio.gather(*(close(c) for c in clients.children))


async def wait_subscribers(
    server: WsServer, wanted: int, within: float = 20.0, channels: int = 0
) -> int:
    """Poll the server until it holds `wanted` live subscriptions (or time runs out):
    on the bench PBX, or summed over the first `channels` PBXes of the many."""
    deadline = time.monotonic() + within
    count = -1
    while time.monotonic() < deadline:
        if channels:
            stats = await server.control("GET", "/_bench/stats-many", pbxes=channels)
        else:
            stats = await server.stats(WS_PBX)
        count = int(stats["subscribers"])
        if count == wanted:
            return count
        await asyncio.sleep(0.2)
    return count


def _take(path: Path) -> bytes:
    """Read and remove a latency file a worker wrote (small; read synchronously)."""
    data = path.read_bytes()
    path.unlink(missing_ok=True)
    return data


@dataclass
class StepResult:
    rate: float
    count: int
    connections: int
    offered_per_s: float
    delivered: int
    expected: int
    delivered_per_s: float
    p50: float
    p99: float
    max: float
    server_cores: float
    client_cores: float
    other_cores: float
    publisher_behind_max: float
    published: int
    gc_pause_max: float
    """Longest garbage-collection pause in the server while publishing (cloudpbx only)."""
    gc_full_passes: int
    """Full (generation 2) collections meanwhile: each scans every tracked object."""
    loop_lag_max: float
    """Longest event-loop stall while publishing (the Python servers; 0 for nchan)."""
    loop_busy_max: float
    """The same, counting only the CPU the loop's thread used (not the kernel running
    other processes): what the server itself stalled for."""
    disorder: int
    """Messages so far (all steps) whose id was not above their connection's last one."""
    close_codes: dict[str, int]

    @property
    def lost(self) -> int:
        """Published to an open connection but not received within the drain time. (When
        a many-channel publisher gives up in the middle of a round, the clients expect
        only the complete rounds: the part of the last one they got counts as none lost.)"""
        return max(0, self.expected - self.delivered)

    @property
    def server_us_per_delivery(self) -> float:
        """Server CPU per delivered message: robust to background load, unlike rates."""
        return self.server_cores / self.delivered_per_s * 1e6 if self.delivered_per_s else 0.0

    @property
    def saturated(self) -> bool:
        """The publisher could not keep the rate (it gave up) or messages were lost."""
        return self.published < self.count or self.lost > 0

    def as_json(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "lost": self.lost,
            "server_us_per_delivery": self.server_us_per_delivery,
        }


async def run_step(
    server: WsServer,
    clients: Clients,
    step: int,
    rate: float,
    count: int,
    drain: float,
    *,
    channels: int = 0,
    max_behind: float = MAX_BEHIND,
) -> StepResult:
    """Publish `count` events at `rate`/s to every client; gather delivery and latency.

    With `channels`, `rate` is the total over that many PBXes (one client each) and each
    PBX gets `count` events, interleaved: the same deliveries per second as one PBX with
    `channels` clients at `rate / channels`."""
    publish_seconds = count * max(1, channels) / rate
    deadline = publish_seconds + drain
    for child in clients.children:
        await child.send({"cmd": "step", "step": step, "expect": count, "deadline": deadline})
    for child in clients.children:
        armed = await child.read(within=30)
        assert armed.get("event") == "armed", armed
    meter = CpuMeter({"server": server.pids, "clients": clients.pids})
    meter.start()
    where = {"pbxes": channels} if channels else {"pbx": WS_PBX}
    published = await server.control(
        "POST",
        "/_bench/publish-many" if channels else "/_bench/publish",
        within=publish_seconds * 4 + 60,
        count=count,
        rate=rate,
        step=step,
        max_behind=max_behind,
        **where,
    )
    sent = int(published["published"])
    if sent < count:
        for child in clients.children:
            await child.send({"cmd": "expect", "step": step, "expect": sent})
    results = await asyncio.gather(*(c.read(within=deadline + 60) for c in clients.children))
    cpu = meter.stop()
    latencies = array("d")
    for result in results:
        latencies.frombytes(_take(Path(result["path"])))
    ordered = sorted(latencies)
    delivered = sum(r["received"] for r in results)
    expected = sum(r["expected"] for r in results)
    last = max((r["t_last"] for r in results if r["t_last"]), default=0.0)
    window = max(1e-9, last - float(published["t_first"]))
    connections = sum(r["open"] for r in results)
    codes: dict[str, int] = {}
    for result in results:
        for code, n in result["close_codes"].items():
            codes[code] = codes.get(code, 0) + n
    return StepResult(
        rate=rate,
        count=count,
        connections=connections,
        offered_per_s=rate * clients.ok / max(1, channels),
        delivered=delivered,
        expected=expected,
        delivered_per_s=delivered / window if delivered else 0.0,
        p50=percentile(ordered, 50),
        p99=percentile(ordered, 99),
        max=ordered[-1] if ordered else float("nan"),
        server_cores=cpu["server"],
        client_cores=cpu["clients"],
        other_cores=cpu["other"],
        publisher_behind_max=float(published["behind_max"]),
        published=sent,
        gc_pause_max=max(published.get("gc", {}).get("longest_s", [0.0])),
        gc_full_passes=int(published.get("gc", {}).get("count", [0, 0, 0])[2]),
        loop_lag_max=float(published.get("loop_lag_s", (0.0, 0.0))[0]),
        loop_busy_max=float(published.get("loop_lag_s", (0.0, 0.0))[1]),
        disorder=sum(r["disorder"] for r in results),
        close_codes=codes,
    )
