"""Benchmark 3: server memory per idle WebSocket connection (issue 11).

VmRSS of the server process (after a gc in cloudpbx's case) before and after 20,000 idle
connections (quick: 1,000; fewer where the hard RLIMIT_NOFILE is lower: the count is
printed) in one process, read once keep-alive pings have gone round twice; a warm-up of
50 connections first, so one-time costs (imports, first handshake, the hub's channel)
are not charged to the connections. Then one event goes to every client, and RSS is read
again: a connection that has sent a message may hold more (e.g. a permessage-deflate
compressor). The plain `websockets` server and nginx + nchan (when installed) are the
references; all three ping their clients.
"""

from __future__ import annotations

import asyncio

from bench import nchan
from bench.common import DATA_DIR, connection_limit
from bench.report import Report, table
from bench.seed import WS_PBX, ws_database
from bench.servers import WsServer, start_cloudpbx, start_raw_websockets
from bench.wsload import close_clients, open_clients, run_step, wait_subscribers

TARGET_KIB = 12.0
WARMUP = 50
FULL_CONNECTIONS = 20_000
QUICK_CONNECTIONS = 1_000
PINGS_SETTLE = 7.0
"""Seconds idle before reading RSS: two rounds of pings (2.5 s here, 3 s nchan's)."""


async def _rss(server: WsServer, settle: float = 1.0) -> int:
    await asyncio.sleep(settle)
    return int((await server.stats(WS_PBX))["rss_kib"])


async def _gc_full(server: WsServer) -> dict[str, float]:
    """cloudpbx only: objects the GC tracks and the time of one full pass (bench/serve.py)."""
    if server.kind != "cloudpbx":
        return {}
    return {k: float(v) for k, v in (await server.control("POST", "/_bench/gc-full")).items()}


async def measure(
    server: WsServer,
    name: str,
    count: int,
    procs: int,
    compression: bool,
    client: str,
    trace: bool = False,
) -> dict[str, float]:
    warm = await open_clients(server, WARMUP, 1, f"{name}-warm", compression, client)
    await wait_subscribers(server, warm.ok)
    await run_step(server, warm, 1, rate=50, count=1, drain=10)
    await close_clients(warm)
    await wait_subscribers(server, 0)
    before = await _rss(server)
    gc_before = await _gc_full(server)
    clients = await open_clients(server, count, procs, name, compression, client)
    try:
        held = await wait_subscribers(server, clients.ok, within=60)
        if clients.failed or held != count:
            raise RuntimeError(
                f"{clients.ok} connected, {held} held by the server, of {count}: "
                f"{clients.errors[:2]}"
            )
        idle = await _rss(server, PINGS_SETTLE)
        gc_idle = await _gc_full(server)
        step = await run_step(server, clients, 2, rate=50, count=1, drain=15)
        after_event = await _rss(server)
    finally:
        await close_clients(clients)
    if trace and server.kind == "cloudpbx":
        await wait_subscribers(server, 0)
        await server.control("POST", "/_bench/tracemalloc/start")
        traced = await open_clients(server, count, procs, f"{name}-trace", compression, client)
        try:
            await wait_subscribers(server, traced.ok)
            path = (DATA_DIR / "tracemalloc-idle-connections.txt").resolve()
            await server.control(
                "POST", "/_bench/tracemalloc/report", path=str(path), count=traced.ok
            )
            print(f"[memory] Python heap growth per connection, by file and line: {path}")
        finally:
            await close_clients(traced)
    return {
        "connections": float(count),
        "rss_before_kib": float(before),
        "rss_idle_kib": float(idle),
        "rss_after_event_kib": float(after_event),
        "idle_kib_per_conn": (idle - before) / count,
        "after_event_kib_per_conn": (after_event - before) / count,
        "event_delivered": float(step.delivered),
        **{f"gc_{k}_before": v for k, v in gc_before.items()},
        **{f"gc_{k}_idle": v for k, v in gc_idle.items()},
        "gc_tracked_per_conn": (gc_idle.get("tracked", 0) - gc_before.get("tracked", 0)) / count,
    }


async def _start(kind: str, loop: str, count: int) -> WsServer:
    if kind == "cloudpbx":
        return await start_cloudpbx("memory-server", await ws_database("memory"), loop)
    if kind == "websockets":
        return await start_raw_websockets("memory-baseline", loop)
    return await nchan.start_nchan("memory-nchan", count)


async def run(
    report: Report,
    *,
    quick: bool,
    loop: str,
    procs: int,
    compression: bool,
    client: str,
    profile: bool,
) -> None:
    suite = "memory"
    count = connection_limit(QUICK_CONNECTIONS if quick else FULL_CONNECTIONS, spare=512)
    results: dict[str, dict[str, float]] = {}
    kinds = ["cloudpbx", "websockets"]
    missing = nchan.available()
    if missing:
        print(f"[memory] nginx + nchan skipped: {missing}")
    else:
        kinds.append("nchan")
    for kind in kinds:
        server = await _start(kind, loop, count)
        try:
            print(f"[memory] {kind}: {count:,} idle connections")
            results[kind] = await measure(
                server, kind, count, procs, compression, client, trace=profile
            )
        except Exception as exc:
            report.fail(suite, f"{kind} memory", f"{type(exc).__name__}: {exc}")
        finally:
            await server.stop()
    rows = [
        [
            kind,
            f"{r['rss_before_kib'] / 1024:.1f} MiB",
            f"{r['rss_idle_kib'] / 1024:.1f} MiB",
            f"{r['idle_kib_per_conn']:.1f}",
            f"{r['rss_after_event_kib'] / 1024:.1f} MiB",
            f"{r['after_event_kib_per_conn']:.1f}",
        ]
        for kind, r in results.items()
    ]
    print()
    print(
        table(
            [
                "server",
                "RSS before",
                "RSS idle",
                "KiB/conn idle",
                "RSS after 1 event",
                "KiB/conn after event",
            ],
            rows,
            right=(1, 2, 3, 4, 5),
        )
    )
    print()
    report.details["memory"] = results
    ours = results.get("cloudpbx")
    if ours is None:
        return
    others = {k: r for k, r in results.items() if k != "cloudpbx"}
    report.add(
        suite,
        f"KiB per idle connection ({count:,}, pings on)",
        f"{ours['idle_kib_per_conn']:.1f} KiB",
        "<= 12 KiB",
        ours["idle_kib_per_conn"] <= TARGET_KIB,
        ", ".join(f"{k} {r['idle_kib_per_conn']:.1f} KiB" for k, r in others.items()),
    )
    note = ", ".join(f"{k} {r['after_event_kib_per_conn']:.1f} KiB" for k, r in others.items())
    report.add(
        suite,
        "KiB per connection after one event",
        f"{ours['after_event_kib_per_conn']:.1f} KiB",
        note=note,
    )
    if "gc_tracked_idle" in ours:
        report.add(
            suite,
            f"one full GC pass with {count:,} idle connections",
            f"{ours['gc_full_pass_cpu_s_idle'] * 1000:.0f} ms",
            note=f"{ours['gc_tracked_per_conn']:.0f} GC-tracked objects per connection, "
            f"{ours['gc_tracked_idle']:,.0f} in all; "
            f"{ours['gc_full_pass_cpu_s_before'] * 1000:.0f} ms without the connections",
        )
    for kind, theirs in others.items():
        if theirs["idle_kib_per_conn"] > 0:
            report.add(
                suite,
                f"idle memory vs {kind}",
                f"{ours['idle_kib_per_conn'] / theirs['idle_kib_per_conn']:.2f}x",
            )
