"""Benchmark: AMI -> WebSocket latency through the event engine, beside the in-process hub.

Two production servers (`cloudpbx serve`, `backend = "asterisk"`) on the same PostgreSQL,
each logged in to its own fake Asterisk (tests/fakes/ami_server.py: the real AMI wire
protocol over TCP on 127.0.0.1): one with `event_engine_url` (NATS JetStream: the
connector publishes into the engine, the process's follower reads it back and fans it
out), one without (the in-process hub, store-first in PostgreSQL: the baseline). This
process holds a WebSocket client on each and writes `ExtensionStatus` events (extension
103 toggling idle / unavailable) into the fake AMI sockets, alternating between the two
servers; the latency of a change is from just before its AMI bytes are written to the
matching `extstatus` arriving on the WebSocket, both read here with `time.perf_counter()`.
It includes the AMI reader's `flush_delay` (5 ms by design: it gathers a burst before
translating). Target (issue 12): p99 <= 20 ms through the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from tests.fakes.ami_server import STATUS_TEXT, FakeAmi
from websockets.asyncio.client import ClientConnection, connect

from bench.ami import KEY, PBX, Seen, first_match, read_extstatus, write_toml
from bench.common import DATA_DIR, HOST, Child, CpuMeter, percentile
from bench.report import Report, ms
from bench.scaleout import NATS, drop_scratch, launch_serve, migrated_scratch, stop_serve
from cloudpbx.adapters.asterisk.framing import AmiMessage

SUITE = "amiengine"
TARGET_P99 = 0.020
EXTEN = "103"
"""Not a queue member, so a change is one `subscriber` + one `extstatus`."""
FULL_CHANGES = 300
QUICK_CHANGES = 40
PAUSE = 0.02
"""Seconds between two changes: a steady trickle, as one busy PBX would send."""


@dataclass
class Lane:
    """One server and what drives and watches it."""

    label: str
    fake: FakeAmi
    child: Child
    ws: ClientConnection
    reader: asyncio.Task[None]
    seen: list[Seen]
    database: str
    stream: str
    latencies: list[float]


async def seed(name: str) -> str:
    async with migrated_scratch(name) as (url, tenants):
        await tenants.create(PBX, "Europe/Warsaw")
        await tenants.create_key(PBX, "bench", value=KEY)
    return url


def extension_status(status: int) -> AmiMessage:
    return AmiMessage(
        [
            ("Event", "ExtensionStatus"),
            ("Privilege", "call,all"),
            ("Exten", EXTEN),
            ("Context", PBX),
            ("Hint", f"PJSIP/{PBX}-{EXTEN}"),
            ("Status", str(status)),
            ("StatusText", STATUS_TEXT[status]),
        ]
    )


async def change(lane: Lane, status: int, within: float) -> float:
    """One change written to the fake AMI; seconds until it showed on the WebSocket."""
    since = len(lane.seen)
    written_at = time.perf_counter()
    lane.fake.set_extension(EXTEN, status, pbx=PBX)  # a resync agrees with the stream
    await lane.fake.emit([extension_status(status)])
    seen = await first_match(lane.seen, since, EXTEN, status, within)
    return seen.at - written_at


async def open_lane(label: str, engine: bool, token: str, index: int) -> Lane:
    database = await seed(f"cloudpbx_amiengine_{token}_{index}")
    stream = f"CPBXAMI_{token}_{index}"
    fake = await FakeAmi().start()
    folder = DATA_DIR / f"amiengine-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    toml = write_toml(folder / "asterisk.toml", HOST, fake.port, fake.username, fake.secret)
    env = {
        "CLOUDPBX_DATABASE_URL": database,
        "CLOUDPBX_EVENT_ENGINE_URL": NATS if engine else "",
        "CLOUDPBX_EVENT_ENGINE_STREAM": stream,
        "CLOUDPBX_DATA_DIR": str(folder),
        "CLOUDPBX_BACKEND": "asterisk",
        "CLOUDPBX_ASTERISK_CONFIG": str(toml),
        "CLOUDPBX_SMS_GATEWAY": "none",
    }
    try:
        child, port = await launch_serve(f"amiengine-serve-{index}", 1, env)
    except BaseException:
        await fake.close()
        await drop_scratch(database, stream)
        raise
    try:
        ws = await connect(f"ws://{HOST}:{port}/ws/pbx_{PBX}?pbxkey={KEY}", max_size=None)
    except BaseException:
        await stop_serve(child)
        await fake.close()
        await drop_scratch(database, stream)
        raise
    seen: list[Seen] = []
    reader = asyncio.create_task(read_extstatus(ws, seen))
    lane = Lane(label, fake, child, ws, reader, seen, database, stream, [])
    try:
        # Warm-up: the connector's lease, login and resync, the engine follower's start.
        await change(lane, 4, within=60.0)
    except BaseException:
        await close_lane(lane)
        raise
    return lane


async def close_lane(lane: Lane) -> None:
    with contextlib.suppress(Exception):
        await lane.ws.close()
    lane.reader.cancel()
    await stop_serve(lane.child)
    await lane.fake.close()
    await drop_scratch(lane.database, lane.stream)


async def run(report: Report, *, quick: bool) -> None:
    token = secrets.token_hex(3)
    kinds = {"in-process hub (baseline)": False, "event engine (JetStream)": True}
    lanes: list[Lane] = []
    try:
        for index, (label, engine) in enumerate(kinds.items()):
            lanes.append(await open_lane(label, engine, token, index))
        meter = CpuMeter({"servers": [lane.child.pid for lane in lanes]})
        meter.start()
        status = 4
        for _ in range(QUICK_CHANGES if quick else FULL_CHANGES):
            status = 0 if status == 4 else 4
            for lane in lanes:
                lane.latencies.append(await change(lane, status, within=10.0))
                await asyncio.sleep(PAUSE)
        cores = meter.stop()
    except Exception as exc:
        report.fail(SUITE, "AMI -> WebSocket", f"{type(exc).__name__}: {exc}")
        return
    finally:
        for lane in lanes:
            await close_lane(lane)
    print(f"[{SUITE}] cores: servers {cores['servers']:.2f}, other {cores['other']:.2f}")
    details: dict[str, Any] = {"cores": cores}
    for lane in lanes:
        ordered = sorted(lane.latencies)
        p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
        details[lane.label] = {"p50": p50, "p99": p99, "max": ordered[-1], "n": len(ordered)}
        print(
            f"[{SUITE}] {lane.label}: {len(ordered)} changes, p50 {ms(p50)}, p99 {ms(p99)}, "
            f"max {ms(ordered[-1])}"
        )
        engine = kinds[lane.label]
        report.add(
            SUITE,
            f"AMI -> WebSocket p50 / p99, {lane.label}",
            f"{ms(p50)} / {ms(p99)}",
            "p99 <= 20 ms" if engine else "",
            (p99 <= TARGET_P99) if engine else None,
            f"{len(ordered)} changes, max {ms(ordered[-1])}; includes the 5 ms flush_delay; "
            f"other load {cores['other']:.2f} cores",
        )
    report.details[SUITE] = details
