"""Publish -> local delivery through the event engine, beside the in-process hub.

    .venv/bin/python -m bench.engine_latency

Two runtimes on the same PostgreSQL server (a scratch database each, BENCH_PG_URL or
CLOUDPBX_TEST_PG or the local trust DSN): the in-process hub (store-first group commit in
PostgreSQL, the baseline) and the engine hub on NATS JetStream (CLOUDPBX_TEST_NATS or
nats://127.0.0.1:4222). Each gets the same steady load, one event per `hub.publish`, and
a local subscriber timestamps what `bus.publish_batch` hands it. The two alternate, twice
each, so background noise hits both alike. Target (issue 12): p99 <= 20 ms.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import nats
import orjson

from cloudpbx.domain.events import SmsSendResponse
from cloudpbx.domain.states import SmsStatus
from cloudpbx.ports.bus import FramedBatch
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.settings import Settings

RATE = 200.0
SECONDS = 5.0
ADMIN = os.environ.get("BENCH_PG_URL") or os.environ.get(
    "CLOUDPBX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS = os.environ.get("CLOUDPBX_TEST_NATS", "nats://127.0.0.1:4222")


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Stamper:
    """A bus sink (ports.bus.Sink) that notes when each tagged message reaches it."""

    def __init__(self, sent: dict[str, float], count: int) -> None:
        self.sent = sent
        self.latencies: list[float] = []
        self.done = asyncio.get_running_loop().create_future()
        self.count = count

    def deliver(self, batch: FramedBatch) -> None:
        now = time.perf_counter()
        for message in batch.messages:
            tag = orjson.loads(message.data)["text"]["smsSendResponse"]["MsgId"]
            self.latencies.append(now - self.sent.pop(tag))
        if len(self.latencies) >= self.count and not self.done.done():
            self.done.set_result(None)

    def missed(self) -> None:
        raise RuntimeError("the bench's subscriber missed messages (the engine dropped them)")

    def bus_closed(self) -> None:
        pass


async def one_run(runtime: Runtime, pbx: str) -> tuple[list[float], float]:
    """Latencies, and CPU seconds of this process per event (load-independent)."""
    tenant = await runtime.tenants.require(pbx)
    sent: dict[str, float] = {}
    count = round(RATE * SECONDS)
    channel = f"pbx_{pbx}"
    stamper = Stamper(sent, count)
    runtime.bus.subscribe(channel, stamper)
    await runtime.hub.last_id(tenant)  # the engine hub starts the channel's follower here
    cpu = time.process_time()
    start = time.perf_counter()
    for index in range(count):
        if (pause := start + index / RATE - time.perf_counter()) > 0:
            await asyncio.sleep(pause)
        tag = secrets.token_hex(6)
        sent[tag] = time.perf_counter()
        await runtime.hub.publish(tenant, [SmsSendResponse(tag, "48500100200", SmsStatus.SENT)])
    await asyncio.wait_for(stamper.done, 30)
    await runtime.hub.flush()  # the database work is part of the cost
    cpu = time.process_time() - cpu
    runtime.bus.unsubscribe(channel, stamper)
    return stamper.latencies, cpu / count


async def delete_stream(stream: str) -> None:
    nc = await nats.connect(NATS, max_reconnect_attempts=0)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="cloudpbx-engine-bench-"))
    token = secrets.token_hex(4)
    base = ADMIN.rsplit("/", 1)[0]
    kinds = {"in-process hub (baseline)": "", "event engine (JetStream)": NATS}
    runtimes: dict[str, Runtime] = {}
    try:
        for index, (label, url) in enumerate(kinds.items()):
            name = f"cloudpbx_bench_{token}_{index}"
            await admin(f'CREATE DATABASE "{name}"')
            settings = Settings(
                data_dir=folder / str(index),
                database_url=f"{base}/{name}",
                backend="none",
                sms_gateway="none",
                event_engine_url=url,
                event_engine_stream=f"CPBXBENCH_{token}",
            )
            runtime = build_runtime(settings)
            await runtime.start()
            await runtime.tenants.create("Bench")
            runtimes[label] = runtime
        results: dict[str, list[float]] = {label: [] for label in kinds}
        cpu: dict[str, list[float]] = {label: [] for label in kinds}
        for _ in range(2):
            for label, runtime in runtimes.items():
                latencies, cpu_per_event = await one_run(runtime, "Bench")
                results[label] += latencies
                cpu[label].append(cpu_per_event)
        print(f"{RATE:.0f} events/s for {SECONDS:.0f} s, twice each, alternating")
        for label, values in results.items():
            p50 = statistics.median(values) * 1000
            p99 = percentile(values, 0.99) * 1000
            worst = max(values) * 1000
            per_event = statistics.mean(cpu[label]) * 1e6
            print(
                f"{label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms, "
                f"CPU {per_event:.0f} µs per event"
            )
    finally:
        for runtime in runtimes.values():
            await runtime.stop()
        for index in range(len(kinds)):
            await admin(f'DROP DATABASE IF EXISTS "cloudpbx_bench_{token}_{index}" WITH (FORCE)')
        await delete_stream(f"CPBXBENCH_{token}")


if __name__ == "__main__":
    asyncio.run(main())
