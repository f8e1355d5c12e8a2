"""Benchmark 1: `GET /cdr` for one day of 10,000 calls in a 1,000,000-row table.

Against the same server process serving the same bytes precomputed from a bench-only
route (`/_bench/cdr-static`): same framework, same response class, no auth, no database.
The load comes from `bench.httpload` in its own process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import CpuMeter, percentile, spawn
from bench.report import Report, ms, table
from bench.seed import CDR_KEY, CDR_PBX, cdr_database, measured_day
from bench.servers import Server, start_cloudpbx

TOTAL_ROWS = 1_000_000
DAY_ROWS = 10_000
RATIO_TARGET = 4.0
CDR_FIELDS = [
    "calldate",
    "clid",
    "src",
    "dst",
    "channel",
    "dstchannel",
    "lastapp",
    "duration",
    "billsec",
    "disposition",
    "uniqueid",
    "cost",
    "zone",
]


async def verify(server: Server, day: str) -> tuple[list[str], int]:
    """Problems with the /cdr answer (empty: correct), and the body's size in bytes."""
    problems: list[str] = []
    params = {"datestart": day, "datestop": day}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        response = await client.get(
            "/cdr", params=params, headers={"Authorization": f"Bearer {CDR_KEY}"}
        )
        static = await client.get("/_bench/cdr-static", params={**params, "pbx": CDR_PBX})
        cached = await client.get(
            "/_bench/cdr-cached", params=params, headers={"Authorization": f"Bearer {CDR_KEY}"}
        )
    if response.status_code != 200:
        return [f"/cdr answered {response.status_code}: {response.text[:200]}"], 0
    if response.headers.get("x-total-count") != str(DAY_ROWS):
        problems.append(f"X-Total-Count {response.headers.get('x-total-count')!r}, not {DAY_ROWS}")
    if "x-truncated" in response.headers:
        problems.append("X-Truncated set on a page that is not truncated")
    rows = orjson.loads(response.content)
    if len(rows) != DAY_ROWS:
        problems.append(f"{len(rows)} rows, not {DAY_ROWS}")
    if rows and list(rows[0]) != CDR_FIELDS:
        problems.append(f"fields {list(rows[0])}")
    if any(not r["calldate"].startswith(day) for r in rows):
        problems.append(f"rows outside {day}")
    if [r["calldate"] for r in rows] != sorted(r["calldate"] for r in rows):
        problems.append("rows not oldest first")
    if rows and not (isinstance(rows[0]["duration"], int) and isinstance(rows[0]["cost"], str)):
        problems.append("duration must be int and cost a string")
    if static.content != response.content:
        problems.append("the precomputed baseline's bytes differ from /cdr's")
    if cached.content != response.content:
        problems.append("the page-cache prototype's bytes differ from /cdr's")
    return problems, len(response.content)


async def sql_breakdown(database: Path, day: str, repeats: int) -> dict[str, float]:
    """Time `CallStore.cdr_page` in-process, and each SQL statement it runs in sqlite3."""
    from sqlalchemy import event

    from cloudpbx.domain.dates import date_range
    from cloudpbx.storage.calls import CallStore
    from cloudpbx.storage.database import create_engine
    from cloudpbx.storage.tenants import TenantStore

    engine = create_engine(f"sqlite:///{database}")
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        tenant = await TenantStore(engine).require(CDR_PBX)
        store = CallStore(engine)
        period = date_range(day, day, tenant.zone)
        await store.cdr_page(tenant, period, DAY_ROWS)  # warm the pool and the page cache
        captured.clear()
        await store.cdr_page(tenant, period, DAY_ROWS)
        statements = list(captured)
        store_times = []
        for _ in range(repeats):
            started = time.perf_counter()
            await store.cdr_page(tenant, period, DAY_ROWS)
            store_times.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    out = {"cdr_page": statistics.median(store_times)}
    conn = sqlite3.connect(database)
    try:
        for statement, parameters in statements:
            label = "json query" if "json_group_array" in statement else "count query"
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                conn.execute(statement, parameters).fetchall()
                times.append(time.perf_counter() - started)
            out[label] = statistics.median(times)
    finally:
        conn.close()
    return out


async def load(
    server: Server, path: str, conns: int, seconds: float, expect_bytes: int, auth: bool
) -> dict[str, Any]:
    args = [
        "--port",
        str(server.port),
        "--path",
        path,
        "--conns",
        str(conns),
        "--duration",
        str(seconds),
        "--max-requests",
        "20000",
        "--expect-bytes",
        str(expect_bytes),
    ]
    if auth:
        args += ["--header", f"Authorization: Bearer {CDR_KEY}"]
    child = await spawn(f"cdr-load-{conns}", "bench.httpload", *args)
    meter = CpuMeter({"server": [server.pid], "client": [child.pid]})
    meter.start()
    try:
        result = await child.read(within=seconds + 120)
    finally:
        cpu = meter.stop()
        await child.stop()
    result["cpu"] = cpu
    return result


async def run(report: Report, *, quick: bool, loop: str) -> None:
    suite = "cdr"
    print("[cdr] preparing the 1,000,000-row database (cached under .bench-data/)")
    database = await asyncio.to_thread(cdr_database, TOTAL_ROWS, DAY_ROWS)
    day = measured_day(TOTAL_ROWS, DAY_ROWS).isoformat()
    breakdown = await sql_breakdown(database, day, repeats=3 if quick else 7)
    server = await start_cloudpbx("cdr-server", database, loop)
    try:
        problems, size = await verify(server, day)
        if problems:
            report.fail(suite, "/cdr correctness", "; ".join(problems))
            return
        report.add(
            suite,
            "/cdr correct (rows, X-Total-Count)",
            f"{DAY_ROWS:,} rows",
            "10,000 + header",
            True,
            f"{size / 1e6:.2f} MB body, same bytes as baseline",
        )
        query = f"?datestart={day}&datestop={day}"
        paths = {
            "cdr": (f"/cdr{query}", True),
            "precomputed": (f"/_bench/cdr-static{query}&pbx={CDR_PBX}", False),
            "cache-proto": (f"/_bench/cdr-cached{query}", True),
        }
        seconds = 2.0 if quick else 8.0
        rounds = 1 if quick else 2
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(rounds):
            for conns in (1, 4):
                for name in ("precomputed", "cdr", "cache-proto"):
                    path, auth = paths[name]
                    print(f"[cdr] {name}, {conns} client(s), {seconds:.0f}s")
                    outcome = await load(server, path, conns, seconds, size, auth)
                    results.setdefault((name, conns), []).append(outcome)
    finally:
        await server.stop()

    stats: dict[tuple[str, int], dict[str, float]] = {}
    rows = []
    for (name, conns), runs in results.items():
        lat = sorted(x for r in runs for x in r["latencies"])
        requests = sum(r["requests"] for r in runs)
        elapsed = sum(r["seconds"] for r in runs)
        errors = sum(r["errors"] for r in runs)
        s = {
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "rps": requests / elapsed,
            "requests": requests,
            "errors": errors,
            "server_cpu": statistics.mean(r["cpu"]["server"] for r in runs),
            "client_cpu": statistics.mean(r["cpu"]["client"] for r in runs),
        }
        stats[(name, conns)] = s
        rows.append(
            [
                name,
                str(conns),
                str(requests),
                str(errors),
                ms(s["p50"]),
                ms(s["p99"]),
                f"{s['rps']:.1f}",
                f"{s['server_cpu']:.2f}",
                f"{s['client_cpu']:.2f}",
            ]
        )
    print()
    print(
        table(
            [
                "route",
                "clients",
                "requests",
                "errors",
                "p50",
                "p99",
                "req/s",
                "srv cores",
                "client cores",
            ],
            rows,
            right=(1, 2, 3, 4, 5, 6, 7, 8),
        )
    )
    print(
        "  in-process breakdown (median): CallStore.cdr_page "
        + ms(breakdown["cdr_page"])
        + "; its SQL alone in sqlite3: "
        + ", ".join(f"{k} {ms(v)}" for k, v in breakdown.items() if k != "cdr_page")
    )
    print()
    report.details["cdr"] = {
        "runs": {f"{k[0]}-c{k[1]}": v for k, v in stats.items()},
        "breakdown_s": breakdown,
        "body_bytes": size,
    }
    if any(s["errors"] for s in stats.values()):
        report.fail(suite, "load errors", "non-200 or short responses; see logs")
    for conns in (1, 4):
        cdr, base = stats[("cdr", conns)], stats[("precomputed", conns)]
        latency = f"{ms(cdr['p50'])} / {ms(cdr['p99'])}"
        report.add(suite, f"/cdr p50 / p99, {conns} client(s)", latency)
        report.add(
            suite,
            f"/cdr req/s, {conns} client(s)",
            f"{cdr['rps']:.1f}",
            note=f"baseline {base['rps']:.1f} req/s, p50 {ms(base['p50'])}",
        )
    lat_ratio = stats[("cdr", 1)]["p50"] / stats[("precomputed", 1)]["p50"]
    thr_ratio = stats[("precomputed", 4)]["rps"] / stats[("cdr", 4)]["rps"]
    report.add(
        suite,
        "p50 latency vs precomputed, 1 client",
        f"{lat_ratio:.1f}x",
        "<= 4x",
        lat_ratio <= RATIO_TARGET,
    )
    report.add(
        suite,
        "req/s vs precomputed, 4 clients",
        f"{thr_ratio:.1f}x slower",
        "<= 4x",
        thr_ratio <= RATIO_TARGET,
    )
    proto_ratio = stats[("cache-proto", 1)]["p50"] / stats[("precomputed", 1)]["p50"]
    proto_thr = stats[("precomputed", 4)]["rps"] / stats[("cache-proto", 4)]["rps"]
    report.add(
        suite,
        "proposed page cache (bench prototype)",
        f"{proto_ratio:.1f}x / {proto_thr:.1f}x",
        note=f"p50 {ms(stats[('cache-proto', 1)]['p50'])}; p50 ratio 1 client / req/s ratio "
        "4 clients, vs precomputed; not in src",
    )
    report.add(
        suite,
        "where /cdr time goes (in-process)",
        ms(breakdown["cdr_page"]),
        note="CallStore.cdr_page; SQL alone: "
        + ", ".join(f"{k} {ms(v)}" for k, v in breakdown.items() if k != "cdr_page"),
    )
