"""Benchmark: scale-out, `cloudpbx serve` with 1 and with 2 worker processes (issue 12).

Both deployments run the production server (`cloudpbx serve [--workers 2]`, no bench
routes) on the same PostgreSQL and the same NATS JetStream server, so the only difference
is the process count. Both are up at once and their steps alternate (at each rate one step
on each; /cdr runs likewise), so the machine's other load hits both alike:

- fan-out: 1,000 WebSocket clients on one PBX, spread over the workers by the kernel
  (SO_REUSEPORT). The orchestrator holds a runtime of its own on the same database and
  engine and publishes `subscriber` events through `EventHub.publish`: into the engine
  once, and every worker's follower fans the stream out to its local clients, exactly as
  an AMI connector in another process would. Rising rates; the sustained rate is the
  highest step kept on schedule with nothing lost and p99 <= 100 ms.
- `/cdr`: a full day (10,000 rows), four keep-alive clients, cached page.

Besides rates it prints the CPU of every party (server processes, client processes, the
publisher, everything else on the machine): on a 2-core machine the clients compete with
the server for the same cores, which bounds the ratio (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import sys
import time
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import nats
from sqlalchemy.engine import make_url

from bench.cdr import AUTH, load
from bench.common import HOST, LOG_DIR, Child, CpuMeter, percentile, wait_for_quiet
from bench.report import Report, ms, rate, table
from bench.seed import CDR_KEY, CDR_PBX, FIRST_DAY, SEED, WS_KEY, WS_PBX, ZONE, _day_rows
from bench.servers import Server
from bench.wsload import Clients, close_clients, open_clients
from cloudpbx.domain.events import Subscriber
from cloudpbx.domain.states import DeviceState
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.settings import Settings

if TYPE_CHECKING:
    from cloudpbx.storage.tenants import TenantStore

CLIENTS = 1_000
CLIENT_PROCS = 2
TARGET_RATIO = 1.7
TARGET_P99 = 0.100
FULL_RATES = [20.0, 40.0, 60.0, 80.0, 100.0, 130.0, 160.0, 200.0]
QUICK_RATES = [40.0]
CDR_CONNS = 4
DAY_ROWS = 10_000
MAX_BEHIND = 3.0
NOISY_CORES = 0.3
"""A step that did not keep up while other processes used more CPU than this is rerun."""
ADMIN = os.environ.get("BENCH_PG_URL") or os.environ.get(
    "CLOUDPBX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS = os.environ.get("CLOUDPBX_TEST_NATS", "nats://127.0.0.1:4222")


@dataclass
class Deployment:
    """One `cloudpbx serve` (its supervisor, if any, and its workers) on a scratch database."""

    workers: int
    settings: Settings
    port: int
    child: Child
    publisher: Runtime
    pids: list[int]
    """The server's processes: `serve` itself and, with --workers N, its children."""


def deployment_settings(workers: int, database: str, stream: str) -> Settings:
    """What the servers and the publisher share: database, engine and its stream."""
    return Settings(
        data_dir=LOG_DIR.parent / f"scaleout-{workers}",
        database_url=database,
        backend="none",
        sms_gateway="none",
        event_engine_url=NATS,
        event_engine_stream=stream,
    )


@dataclass
class FanoutStep:
    rate: float
    offered_per_s: float
    delivered: int
    expected: int
    delivered_per_s: float
    p50: float
    p99: float
    published: int
    count: int
    cores: dict[str, float]
    seconds: float
    """Wall time the CPU was measured over (publishing and the clients' last receipt)."""

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    @property
    def kept_up(self) -> bool:
        return (
            self.published == self.count
            and self.lost == 0
            and self.p99 <= TARGET_P99
            and self.delivered_per_s >= 0.95 * self.offered_per_s
        )

    def us_per_delivery(self, party: str) -> float:
        return self.cores[party] / self.delivered_per_s * 1e6 if self.delivered_per_s else 0.0

    def us_per_event(self, party: str) -> float:
        """CPU per published event (one event = one delivery to each of the clients)."""
        if not self.published:
            return 0.0
        # Clamped: a process that exits during the step takes its CPU time with it.
        return max(0.0, self.cores[party]) * self.seconds / self.published * 1e6


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def admin_sql(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(ADMIN))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def migrated_scratch(name: str) -> AsyncIterator[tuple[str, TenantStore]]:
    """The scratch database `name`, made anew and migrated: its URL and a tenant store on
    it, open for the `with` block only."""
    from cloudpbx.storage import migrate
    from cloudpbx.storage.database import create_engine
    from cloudpbx.storage.tenants import TenantStore

    await admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin_sql(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        yield url, TenantStore(engine)
    finally:
        await engine.dispose()


async def seed_database(name: str) -> str:
    """A migrated scratch database with the WebSocket PBX and one full day of CDRs."""
    async with migrated_scratch(name) as (url, tenants):
        for pbx, key in ((WS_PBX, WS_KEY), (CDR_PBX, CDR_KEY)):
            await tenants.create(pbx, ZONE)
            await tenants.create_key(pbx, "bench", value=key)
        cdr_tenant = await tenants.require(CDR_PBX)
    rows = _day_rows(random.Random(SEED), FIRST_DAY, DAY_ROWS, ZoneInfo(ZONE), 1)
    conn = await asyncpg.connect(_dsn(ADMIN, name))
    try:
        await conn.copy_records_to_table(
            "cdr",
            records=[(cdr_tenant.id, datetime.fromisoformat(str(r[1])), *r[2:]) for r in rows],
            columns=[
                "pbx_id", "started_at", "calldate", "clid", "src", "dst", "channel",
                "dstchannel", "lastapp", "duration", "billsec", "disposition", "uniqueid",
                "cost", "zone", "rendered",
            ],
        )  # fmt: skip
        await conn.execute("VACUUM ANALYZE cdr")
    finally:
        await conn.close()
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pids_named(command: str) -> list[int]:
    """Processes whose command name is `command` (the machine's nats-server, postgres):
    their CPU is the engine's and the database's share of a step. They serve everyone
    on the machine, so other people's work shows up there too (see "other")."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == command:
                    found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, workers: int) -> None:
    """Until /healthz answers 200 and the supervisor has started its workers (90 s at most;
    multiprocessing may add a resource-tracker child, hence at least N children)."""
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve --workers {workers} did not start (see its log)")
            started = len(_children(proc.pid)) if workers > 1 else 1
            with contextlib.suppress(httpx.HTTPError):
                if started >= workers and (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.3)


async def launch_serve(name: str, workers: int, settings_env: dict[str, str]) -> tuple[Child, int]:
    """`cloudpbx serve --workers N` (the production command) on a free port, with these
    CLOUDPBX_* variables; returns once every worker is up and /healthz answers 200."""
    port = free_port()
    env = {**os.environ, "CLOUDPBX_LOG_LEVEL": "warning", **settings_env}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    cli = Path(sys.executable).with_name("cloudpbx")
    args = ["serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(cli), *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env
        )
    child = Child(name, proc, log_path)
    try:
        await _wait_ready(f"http://{HOST}:{port}", proc, workers)
    except BaseException:
        await stop_serve(child)
        raise
    return child, port


async def stop_serve(child: Child) -> None:
    """SIGTERM (WebSockets closed with 1012, leases released), SIGKILL after 40 s."""
    if child.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
    await child.stop(grace=40)


async def drop_scratch(database_url: str, stream: str) -> None:
    """Remove a scratch database and its engine stream (best effort: cleanup only)."""
    with contextlib.suppress(Exception):
        name = make_url(database_url).database
        await admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with contextlib.suppress(Exception):
        nc = await nats.connect(NATS, max_reconnect_attempts=0)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()


def server_env(settings: Settings) -> dict[str, str]:
    return {
        "CLOUDPBX_DATABASE_URL": settings.effective_database_url,
        "CLOUDPBX_EVENT_ENGINE_URL": settings.event_engine_url,
        "CLOUDPBX_EVENT_ENGINE_STREAM": settings.event_engine_stream,
        "CLOUDPBX_DATA_DIR": str(settings.data_dir),
        "CLOUDPBX_BACKEND": settings.backend,
        "CLOUDPBX_SMS_GATEWAY": settings.sms_gateway,
    }


async def start_deployment(workers: int, token: str) -> Deployment:
    """A seeded scratch database, `serve --workers N` on it, and the publisher's runtime."""
    database = await seed_database(f"cloudpbx_scaleout_{token}_{workers}")
    settings = deployment_settings(workers, database, f"CPBXSCALE_{token}_{workers}")
    try:
        child, port = await launch_serve(f"scaleout-serve-{workers}", workers, server_env(settings))
    except BaseException:
        await drop_scratch(database, settings.event_engine_stream)
        raise
    deployment = Deployment(workers, settings, port, child, build_runtime(settings), [])
    try:
        await deployment.publisher.start()
    except BaseException:
        await stop_deployment(deployment)
        raise
    deployment.pids = [child.pid, *_children(child.pid)]
    return deployment


async def stop_deployment(deployment: Deployment) -> None:
    with contextlib.suppress(Exception):
        await deployment.publisher.stop()
    await stop_serve(deployment.child)
    settings = deployment.settings
    await drop_scratch(settings.effective_database_url, settings.event_engine_stream)


def _take(path: Path) -> bytes:
    """Read and remove a latency file a client worker wrote (small; read synchronously)."""
    data = path.read_bytes()
    path.unlink(missing_ok=True)
    return data


async def publish(runtime: Runtime, count: int, per_second: float, step: int) -> dict[str, float]:
    """`count` events through the hub at `per_second`, each carrying its scheduled time."""
    tenant = await runtime.tenants.require(WS_PBX)
    loop = asyncio.get_running_loop()
    start = loop.time()
    wall_start = time.time()
    published = 0
    for index in range(count):
        delay = start + index / per_second - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > MAX_BEHIND:
            break
        scheduled = repr(wall_start + index / per_second)
        event = Subscriber(f"{WS_PBX}-101", DeviceState.IN_USE, str(step), scheduled)
        await runtime.hub.publish(tenant, [event])
        published += 1
    return {"published": published, "t_first": wall_start}


async def fanout_step(
    deployment: Deployment, clients: Clients, step: int, per_second: float, count: int
) -> FanoutStep:
    drain = 10.0
    deadline = count / per_second + drain
    for child in clients.children:
        await child.send({"cmd": "step", "step": step, "expect": count, "deadline": deadline})
    for child in clients.children:
        await child.read(within=30)
    meter = CpuMeter(
        {
            "server": deployment.pids,
            "clients": clients.pids,
            "publisher": [os.getpid()],
            "engine": pids_named("nats-server"),
            "postgres": pids_named("postgres"),
        }
    )
    meter.start()
    metered_from = time.monotonic()
    sent = await publish(deployment.publisher, count, per_second, step)
    if sent["published"] < count:
        for child in clients.children:
            await child.send({"cmd": "expect", "step": step, "expect": int(sent["published"])})
    results = await asyncio.gather(*(c.read(within=deadline + 60) for c in clients.children))
    cores = meter.stop()
    seconds = time.monotonic() - metered_from
    latencies = array("d")
    for result in results:
        latencies.frombytes(_take(Path(result["path"])))
    ordered = sorted(latencies)
    delivered = sum(r["received"] for r in results)
    last = max((r["t_last"] for r in results if r["t_last"]), default=0.0)
    window = max(1e-9, last - sent["t_first"])
    return FanoutStep(
        rate=per_second,
        offered_per_s=per_second * clients.ok,
        delivered=delivered,
        expected=sum(r["expected"] for r in results),
        delivered_per_s=delivered / window if delivered else 0.0,
        p50=percentile(ordered, 50),
        p99=percentile(ordered, 99),
        published=int(sent["published"]),
        count=count,
        cores=cores,
        seconds=seconds,
    )


def label_of(workers: int) -> str:
    return f"{workers} process" + ("es" if workers > 1 else "")


async def connect(deployment: Deployment) -> Clients:
    server = Server("cloudpbx", deployment.child, deployment.port)
    name = f"scaleout-{deployment.workers}"
    clients = await open_clients(server, CLIENTS, CLIENT_PROCS, name, False, "raw")
    if clients.failed:
        await close_clients(clients)
        raise RuntimeError(f"{clients.failed} connections failed: {clients.errors[:2]}")
    await fanout_step(deployment, clients, 1, 20.0, 10)  # warm-up: the followers start
    return clients


async def fanout_ladder(
    deployments: list[Deployment], clients: dict[int, Clients], quick: bool
) -> dict[int, list[FanoutStep]]:
    """Rising rates; at each rate one step per deployment in turn, so that the machine's
    other load hits both alike. A deployment leaves at its first step that did not keep up;
    a step that failed under other load (NOISY_CORES) is run once more after a quiet wait."""
    steps: dict[int, list[FanoutStep]] = {d.workers: [] for d in deployments}
    active = list(deployments)
    seconds = 3.0 if quick else 5.0
    number = 1
    for per_second in QUICK_RATES if quick else FULL_RATES:
        for deployment in list(active):
            for attempt in (1, 2):
                number += 1
                count = round(per_second * seconds)
                step = await fanout_step(
                    deployment, clients[deployment.workers], number, per_second, count
                )
                print(
                    f"[scaleout] {label_of(deployment.workers)}: {per_second:.0f} events/s x "
                    f"{clients[deployment.workers].ok}: {rate(step.delivered_per_s)} delivered, "
                    f"p50 {ms(step.p50)}, p99 {ms(step.p99)}, lost {step.lost}, published "
                    f"{step.published}/{step.count}; cores: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in step.cores.items())
                )
                noisy = step.cores["other"] > NOISY_CORES
                if attempt == 1 and not step.kept_up and noisy and not quick:
                    print("[scaleout] noisy step, retrying once after a quiet wait")
                    await wait_for_quiet(30.0)
                    continue
                break
            steps[deployment.workers].append(step)
            if not step.kept_up:
                active.remove(deployment)
        if not active:
            break
    return steps


async def cdr_load(deployments: list[Deployment], quick: bool) -> dict[int, dict[str, Any]]:
    """/cdr of a full day, four keep-alive clients; runs alternate between deployments."""
    day = FIRST_DAY.isoformat()
    path = f"/cdr?datestart={day}&datestop={day}"
    runs: dict[int, list[dict[str, Any]]] = {d.workers: [] for d in deployments}
    for deployment in deployments:
        # Warm-up, not reported: 8 connections, so that every worker has rendered and
        # cached the page before the measured runs (each process has its own page cache).
        await load(deployment.port, path, 8, 1.0, 0, [AUTH], deployment.pids)
    for _ in range(1 if quick else 3):
        for deployment in deployments:
            runs[deployment.workers].append(
                await load(
                    deployment.port,
                    path,
                    CDR_CONNS,
                    3.0 if quick else 6.0,
                    0,
                    [AUTH],
                    deployment.pids,
                )
            )
    out: dict[int, dict[str, Any]] = {}
    for workers, done in runs.items():
        requests = sum(r["requests"] for r in done)
        elapsed = sum(r["seconds"] for r in done)
        server_cores = sum(r["cpu"]["server"] for r in done) / len(done)
        cdr = {
            "rps": requests / elapsed,
            "p50": percentile(sorted(x for r in done for x in r["latencies"]), 50),
            "errors": sum(r["errors"] for r in done),
            "server_cores": server_cores,
            "client_cores": sum(r["cpu"]["client"] for r in done) / len(done),
            "other_cores": sum(r["cpu"]["other"] for r in done) / len(done),
            "ms_cpu_per_request": server_cores * elapsed / max(1, requests) * 1e3,
        }
        print(
            f"[scaleout] {label_of(workers)}: /cdr x{CDR_CONNS} {cdr['rps']:.0f} req/s, "
            f"p50 {ms(cdr['p50'])}, errors {cdr['errors']}; cores: server {server_cores:.2f}, "
            f"client {cdr['client_cores']:.2f}, other {cdr['other_cores']:.2f}"
        )
        out[workers] = cdr
    return out


async def measure(deployments: list[Deployment], quick: bool) -> dict[int, dict[str, Any]]:
    clients: dict[int, Clients] = {}
    try:
        for deployment in deployments:
            clients[deployment.workers] = await connect(deployment)
        steps = await fanout_ladder(deployments, clients, quick)
    finally:
        for opened in clients.values():
            await close_clients(opened)
    cdr = await cdr_load(deployments, quick)
    return {
        d.workers: {"label": label_of(d.workers), "steps": steps[d.workers], "cdr": cdr[d.workers]}
        for d in deployments
    }


def sustained(steps: list[FanoutStep]) -> FanoutStep | None:
    kept = [s for s in steps if s.kept_up]
    return max(kept, key=lambda s: s.delivered_per_s) if kept else None


async def run(report: Report, *, quick: bool) -> None:
    suite = "scaleout"
    token = secrets.token_hex(3)
    deployments: list[Deployment] = []
    try:
        for workers in (1, 2):
            deployments.append(await start_deployment(workers, token))
        results = await measure(deployments, quick)
    except Exception as exc:
        report.fail(suite, "1 and 2 processes", f"{type(exc).__name__}: {exc}")
        return
    finally:
        for deployment in deployments:
            await stop_deployment(deployment)
    rows = []
    for result in results.values():
        for s in result["steps"]:
            rows.append(
                [
                    result["label"], f"{s.offered_per_s:,.0f}", f"{s.delivered_per_s:,.0f}",
                    str(s.lost), ms(s.p50), ms(s.p99), f"{s.cores['server']:.2f}",
                    f"{s.us_per_delivery('server'):.1f}", f"{s.cores['clients']:.2f}",
                    f"{s.us_per_delivery('clients'):.1f}", f"{s.cores['publisher']:.2f}",
                    f"{s.us_per_event('engine'):.0f}", f"{s.us_per_event('postgres'):.0f}",
                    f"{s.cores['other']:.2f}",
                ]
            )  # fmt: skip
    print()
    print(
        table(
            [
                "deployment",
                "offered/s",
                "delivered/s",
                "lost",
                "p50",
                "p99",
                "srv cores",
                "srv us/dlv",
                "client cores",
                "client us/dlv",
                "publisher",
                "engine us/evt",
                "pg us/evt",
                "other",
            ],
            rows,
            right=tuple(range(1, 14)),
        )
    )
    print()
    report.details[suite] = {
        str(w): {
            "steps": [
                {
                    **s.__dict__,
                    "lost": s.lost,
                    "kept_up": s.kept_up,
                    "us_per_event": {p: s.us_per_event(p) for p in ("engine", "postgres")},
                }
                for s in r["steps"]
            ],
            "cdr": r["cdr"],
        }
        for w, r in results.items()
    }
    one, two = (sustained(results[w]["steps"]) for w in (1, 2))
    one_rate = one.delivered_per_s if one else 0.0
    two_rate = two.delivered_per_s if two else 0.0
    for workers, best in ((1, one), (2, two)):
        if best is None:
            report.add(suite, f"fan-out, {workers} process(es)", "no step kept up")
            continue
        report.add(
            suite,
            f"fan-out sustained, {workers} process(es)",
            rate(best.delivered_per_s),
            note=f"p99 {ms(best.p99)}; server {best.us_per_delivery('server'):.1f} us, "
            f"clients {best.us_per_delivery('clients'):.1f} us CPU per delivery; "
            f"other load {best.cores['other']:.2f} cores",
        )
    steps = [s for w in (1, 2) for s in results[w]["steps"]]
    for party, what in (("engine", "nats-server"), ("postgres", "PostgreSQL (archive)")):
        costs = sorted(s.us_per_event(party) for s in steps)
        if costs:
            report.add(
                suite,
                f"{what} CPU per published event",
                f"{costs[len(costs) // 2]:.0f} us",
                note=f"median over steps, range {costs[0]:.0f}-{costs[-1]:.0f} us; "
                "machine-wide processes, other people's use included",
            )
    ratio = two_rate / one_rate if one_rate else 0.0
    top = results[2]["steps"][-1] if results[2]["steps"] else None
    ceiling = (
        "" if top is None or not top.kept_up else "; 2 processes not saturated at the top step"
    )
    report.add(
        suite,
        "fan-out 2 vs 1 process (deliveries/s, p99 <= 100 ms)",
        f"{ratio:.2f}x",
        f">= {TARGET_RATIO}x",
        ratio >= TARGET_RATIO,
        f"{rate(one_rate)} -> {rate(two_rate)}{ceiling}",
    )
    cdr_one, cdr_two = results[1]["cdr"], results[2]["cdr"]
    cdr_ratio = cdr_two["rps"] / cdr_one["rps"] if cdr_one["rps"] else 0.0
    report.add(
        suite,
        f"/cdr 2 vs 1 process (req/s, {CDR_CONNS} clients)",
        f"{cdr_ratio:.2f}x",
        f">= {TARGET_RATIO}x",
        cdr_ratio >= TARGET_RATIO and not cdr_one["errors"] and not cdr_two["errors"],
        f"{cdr_one['rps']:.0f} -> {cdr_two['rps']:.0f} req/s; server CPU "
        f"{cdr_one['ms_cpu_per_request']:.2f} / {cdr_two['ms_cpu_per_request']:.2f} ms per "
        f"request; client cores {cdr_one['client_cores']:.2f} / {cdr_two['client_cores']:.2f}",
    )
