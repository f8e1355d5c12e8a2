"""Benchmark: many small channels, 10,000 PBXes x 1 client (issue 11).

The same deliveries per second as the fan-out suite's one PBX x 1,000 clients, but every
event goes to one PBX with one client: each delivery is also one `EventHub.publish`
(id, JSON, history) and one row of the group commit. Two cloudpbx servers side by side,
steps alternating: one PBX with 1,000 clients, and 10,000 PBXes (bench.seed's
many-channel database) with one client each, at the same total rates. Target: server
CPU per delivery within 1.5x of the one-channel case.

Before the measured steps every PBX gets one event (its channel is loaded and its first
block of ids reserved: once per PBX in a server's life, not per event).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bench.common import connection_limit
from bench.fanout import STEP_HEADERS, describe, qualifies, step_rows
from bench.report import Report, ms, table
from bench.seed import channels_database, ws_database
from bench.servers import Server, start_cloudpbx
from bench.wsload import (
    Clients,
    StepResult,
    close_clients,
    open_clients,
    run_step,
    wait_subscribers,
)

ONE_CHANNEL_CLIENTS = 1_000
FULL_CHANNELS = 10_000
QUICK_CHANNELS = 1_000
FULL_RATES = [5_000.0, 10_000.0, 20_000.0]
QUICK_RATES = [10_000.0]
TARGET_RATIO = 1.5
PROFILE_RATE = 10_000.0
"""With `--profile`: the many-channel step at this total rate runs under cProfile."""


async def _connect(
    server: Server, name: str, total: int, procs: int, client: str, channels: int
) -> Clients:
    clients = await open_clients(server, total, procs, name, False, client, channels=bool(channels))
    held = await wait_subscribers(server, clients.ok, within=60, channels=channels)
    if clients.failed or held != total:
        await close_clients(clients)
        raise RuntimeError(f"{clients.ok} connected, {held} held, of {total}: {clients.errors[:2]}")
    print(f"[channels] {name}: {total:,} clients connected in {clients.connect_seconds:.1f}s")
    return clients


async def run(
    report: Report,
    *,
    quick: bool,
    loop: str,
    procs: int,
    compression: bool,
    client: str,
    profile: bool = False,
) -> None:
    suite = "channels"
    channels = connection_limit(QUICK_CHANNELS if quick else FULL_CHANNELS, spare=512)
    rates = QUICK_RATES if quick else FULL_RATES
    seconds = 3.0 if quick else 5.0
    if compression:
        print("[channels] clients do not offer deflate here (the fan-out suite measures it)")
    servers: dict[str, Server] = {}
    clients: dict[str, Clients] = {}
    results: dict[str, list[StepResult]] = {"one PBX": [], f"{channels:,} PBXes": []}
    one, many = results
    try:
        servers[one] = await start_cloudpbx("channels-one", await ws_database("channels-one"), loop)
        servers[many] = await start_cloudpbx(
            "channels-many", await channels_database("channels-many", channels), loop
        )
        clients[one] = await _connect(
            servers[one], "channels-one", ONE_CHANNEL_CLIENTS, procs, client, 0
        )
        clients[many] = await _connect(
            servers[many], "channels-many", channels, procs, client, channels
        )
        # Warm-up, not reported: every channel loaded, every PBX's first ids reserved.
        await run_step(servers[one], clients[one], 1, rate=20, count=10, drain=10)
        warm = await servers[many].control("POST", "/_bench/warm-many", 300, pbxes=channels)
        print(f"[channels] first event on each of {channels:,} PBXes: {warm['seconds']:.1f}s")
        await asyncio.sleep(2.0)  # its deliveries, before the first step
        step_no = 1
        for total in rates:
            for label in results:
                step_no += 1
                width = channels if label == many else 0
                per_channel = total / (channels if width else ONE_CHANNEL_CLIENTS)
                count = max(1, round(per_channel * seconds))
                per_second = total if width else per_channel
                profiling = profile and label == many and total == PROFILE_RATE
                if profiling:
                    await servers[label].control("POST", "/_bench/profile/start")
                step = await run_step(
                    servers[label], clients[label], step_no, per_second, count, 10, channels=width
                )
                if profiling:
                    path = (Path(".bench-data") / "profile-channels.txt").resolve()
                    await servers[label].control("POST", "/_bench/profile/stop", path=str(path))
                    print(f"[channels] cProfile of the {label} server at {total:.0f}/s: {path}")
                print(f"[channels] {describe(label, step)}")
                results[label].append(step)
    except Exception as exc:
        report.fail(suite, "many channels", f"{type(exc).__name__}: {exc}")
    finally:
        for group in clients.values():
            await close_clients(group)
        for server in servers.values():
            with contextlib.suppress(Exception):
                await server.stop()
    rows = [r for label, steps in results.items() for r in step_rows(label, steps)]
    print()
    print(table(STEP_HEADERS, rows, right=tuple(range(1, 14))))
    print()
    report.details["channels"] = {k: [s.as_json() for s in v] for k, v in results.items()}
    pairs = list(zip(results[one], results[many], strict=False))
    if not pairs:
        return
    for single, spread in pairs:
        if not single.server_us_per_delivery:
            continue
        ratio = spread.server_us_per_delivery / single.server_us_per_delivery
        kept = "kept up" if qualifies(spread) else "did not keep up"
        report.add(
            suite,
            f"CPU per delivery, {channels:,} PBXes vs one, {single.offered_per_s:,.0f}/s",
            f"{ratio:.2f}x",
            "<= 1.5x",
            ratio <= TARGET_RATIO,
            f"{spread.server_us_per_delivery:.1f} vs {single.server_us_per_delivery:.1f} us; "
            f"many: p99 {ms(spread.p99)}, lost {spread.lost}, {kept}",
        )
