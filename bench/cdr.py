"""Benchmark 1: `GET /cdr` for one day of 10,000 calls in a 1,000,000-row table, and a
small list (`/transcription`, 50 rows).

Baselines, all measured in the same run:
- the same server process serving the same bytes precomputed from a bench-only route
  (`/_bench/cdr-static`, `/_bench/list-static`): same framework, same response code
  (ETag, gzip), no auth, no database;
- nginx serving the same bytes as a static file, plain and gzip (bench/nginx.py), when the
  Debian package is installed: the physical reference of the machine.
The load comes from `bench.httpload` in its own process.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import CpuMeter, percentile, spawn
from bench.nginx import Nginx, start_nginx
from bench.report import Report, ms, table
from bench.seed import CDR_KEY, CDR_PBX, LIST_ROWS, cdr_database, measured_day
from bench.servers import Server, start_cloudpbx
from cloudpbx.api.responses import GZIP_LEVEL

TOTAL_ROWS = 1_000_000
DAY_ROWS = 10_000
RATIO_TARGET = 1.5
UNCACHED_TARGET_S = 0.008  # per 10,000 rows, SQLite
PG_FACTOR_TARGET = 2.0
WRITE_P99_TARGET = 3.0
PG_DAYS = 10
WRITE_RATE = 200.0  # new calls per second meanwhile: a very busy PBX
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
AUTH = f"Authorization: Bearer {CDR_KEY}"
GZIP = "Accept-Encoding: gzip"


async def verify(server: Server, day: str) -> tuple[list[str], dict[str, int]]:
    """Problems with the answers (empty: correct), and the body sizes in bytes."""
    problems: list[str] = []
    params = {"datestart": day, "datestop": day}
    auth = {"Authorization": f"Bearer {CDR_KEY}"}
    plain = {"Accept-Encoding": "identity"}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        response = await client.get("/cdr", params=params, headers={**auth, **plain})
        static = await client.get(
            "/_bench/cdr-static", params={**params, "pbx": CDR_PBX}, headers=plain
        )
        zipped = await client.get(
            "/cdr", params=params, headers={**auth, "Accept-Encoding": "gzip"}
        )
        head = await client.head("/cdr", params=params, headers={**auth, **plain})
        again = await client.get(
            "/cdr", params=params, headers={**auth, "If-None-Match": response.headers["etag"]}
        )
        small = await client.get("/transcription", params=params, headers={**auth, **plain})
        small_static = await client.get(
            "/_bench/list-static", params={**params, "pbx": CDR_PBX}, headers=plain
        )
        small_zipped = await client.get(
            "/transcription", params=params, headers={**auth, "Accept-Encoding": "gzip"}
        )
    if response.status_code != 200:
        return [f"/cdr answered {response.status_code}: {response.text[:200]}"], {}
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
    if zipped.headers.get("content-encoding") != "gzip" or zipped.content != response.content:
        problems.append("gzip /cdr does not decode to the plain bytes")
    if head.status_code != 200 or head.headers.get("content-length") != str(len(response.content)):
        problems.append(f"HEAD /cdr: {head.status_code} {head.headers}")
    if again.status_code != 304:
        problems.append(f"If-None-Match with the ETag answered {again.status_code}, not 304")
    if small.status_code != 200 or len(orjson.loads(small.content)) != LIST_ROWS:
        problems.append(f"/transcription: {small.status_code}, {small.content[:100]!r}")
    if small_static.content != small.content or small_zipped.content != small.content:
        problems.append("/transcription bytes differ from its baseline or its gzip")
    sizes = {
        "cdr": len(response.content),
        "cdr_gz": len(gzip.compress(response.content, GZIP_LEVEL, mtime=0)),
        "list": len(small.content),
        "list_gz": len(gzip.compress(small.content, GZIP_LEVEL, mtime=0)),
    }
    return problems, sizes


async def in_process(database: Path, day: str, repeats: int) -> dict[str, float]:
    """`CallStore.cdr_page` timed in-process: served from the page cache, and rendered
    (no cache: the first read of a range, or one that just got a row); SQLite, and
    PostgreSQL when BENCH_PG_URL (or CLOUDPBX_TEST_PG) names a server."""
    out = await _page_times(f"sqlite:///{database}", day, repeats)
    pg_url = os.environ.get("BENCH_PG_URL") or os.environ.get("CLOUDPBX_TEST_PG")
    if pg_url:
        out.update(await _postgres_times(pg_url, database, day, repeats))
    return out


async def _page_times(url: str, day: str, repeats: int, prefix: str = "") -> dict[str, float]:
    from cloudpbx.domain.dates import date_range
    from cloudpbx.storage.calls import CallStore
    from cloudpbx.storage.database import create_engine
    from cloudpbx.storage.reads import SqliteReaders
    from cloudpbx.storage.tenants import TenantStore

    engine = create_engine(url)
    readers = SqliteReaders.for_engine(engine)  # as the runtime wires them
    try:
        tenant = await TenantStore(engine).require(CDR_PBX)
        period = date_range(day, day, tenant.zone)
        out = {}
        for name, cache_bytes in (("cached", 64 * 1024 * 1024), ("uncached", 0)):
            store = CallStore(engine, page_cache_bytes=cache_bytes, readers=readers)
            page = await store.cdr_page(tenant, period, DAY_ROWS)  # warm the pool (and cache)
            if page.total != DAY_ROWS:
                raise RuntimeError(f"{url.split(':')[0]}: {page.total} rows, not {DAY_ROWS}")
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                await store.cdr_page(tenant, period, DAY_ROWS)
                times.append(time.perf_counter() - started)
            out[f"{prefix}{name}"] = statistics.median(times)
        return out
    finally:
        if readers is not None:
            await readers.close()
        await engine.dispose()


async def _postgres_times(
    admin_url: str, database: Path, day: str, repeats: int
) -> dict[str, float]:
    """Copy the measured day and the days around it (PG_DAYS x 10,000 rows) into a scratch
    PostgreSQL database, migrated by the project, and time the same page there."""
    import sqlite3

    import asyncpg
    from sqlalchemy.engine import make_url

    from cloudpbx.storage import migrate
    from cloudpbx.storage.database import create_engine
    from cloudpbx.storage.tenants import TenantStore

    url = make_url(admin_url)
    name = f"{url.database}_bench_cdr"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    scratch = url.set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(scratch)
        try:
            await migrate.upgrade(engine)
            tenants = TenantStore(engine)
            tenant = await tenants.create(CDR_PBX, "Europe/Warsaw")
        finally:
            await engine.dispose()
        source = sqlite3.connect(database)
        try:
            columns = (
                "started_at, calldate, clid, src, dst, channel, dstchannel, lastapp, duration, "
                "billsec, disposition, uniqueid, cost, zone, rendered"
            )
            (first_id,) = source.execute(
                "SELECT min(id) FROM cdr WHERE calldate >= ?", (day,)
            ).fetchone()
            rows = source.execute(
                f"SELECT {columns} FROM cdr WHERE id >= ? ORDER BY id LIMIT ?",
                (first_id - DAY_ROWS * (PG_DAYS // 2), PG_DAYS * DAY_ROWS),
            ).fetchall()
        finally:
            source.close()
        conn = await asyncpg.connect(
            url.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
        )
        try:
            await conn.copy_records_to_table(
                "cdr",
                records=[(tenant.id, datetime.fromisoformat(r[0]), *r[1:]) for r in rows],
                columns=["pbx_id", *(c.strip() for c in columns.split(","))],
            )
            await conn.execute("VACUUM ANALYZE cdr")  # as autovacuum would have by now
        finally:
            await conn.close()
        return await _page_times(scratch, day, repeats, prefix="pg_")
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def load(
    port: int,
    path: str,
    conns: int,
    seconds: float,
    expect_bytes: int,
    headers: list[str],
    pids: list[int],
) -> dict[str, Any]:
    args = [
        "--port",
        str(port),
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
    for header in headers:
        args += ["--header", header]
    child = await spawn(f"cdr-load-{conns}", "bench.httpload", *args)
    meter = CpuMeter({"server": pids, "client": [child.pid]})
    meter.start()
    try:
        result = await child.read(within=seconds + 120)
    finally:
        cpu = meter.stop()
        await child.stop()
    result["cpu"] = cpu
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    lat = sorted(x for r in runs for x in r["latencies"])
    requests = sum(r["requests"] for r in runs)
    elapsed = sum(r["seconds"] for r in runs)
    server_cpu = statistics.mean(r["cpu"]["server"] for r in runs)
    return {
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "rps": requests / elapsed,
        "requests": requests,
        "errors": sum(r["errors"] for r in runs),
        "server_cpu": server_cpu,
        "cpu_per_request": server_cpu * elapsed / max(1, requests),
        "client_cpu": statistics.mean(r["cpu"]["client"] for r in runs),
        "other_cpu": statistics.mean(r["cpu"]["other"] for r in runs),
    }


async def run(report: Report, *, quick: bool, loop: str) -> None:
    suite = "cdr"
    print("[cdr] preparing the 1,000,000-row database (cached under .bench-data/)")
    database = await asyncio.to_thread(cdr_database, TOTAL_ROWS, DAY_ROWS)
    day = measured_day(TOTAL_ROWS, DAY_ROWS).isoformat()
    print("[cdr] in-process page times (SQLite; PostgreSQL when configured)")
    breakdown = await in_process(database, day, repeats=5 if quick else 15)
    server = await start_cloudpbx("cdr-server", database, loop)
    nginx: Nginx | None = None
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        problems, sizes = await verify(server, day)
        if problems:
            report.fail(suite, "/cdr correctness", "; ".join(problems))
            return
        report.add(
            suite,
            "/cdr correct (rows, headers, gzip, HEAD, 304)",
            f"{DAY_ROWS:,} rows",
            "10,000 + header",
            True,
            f"{sizes['cdr'] / 1e6:.2f} MB body ({sizes['cdr_gz'] / 1e3:.0f} KB gzip), "
            "same bytes as baseline",
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            body = (
                await client.get(
                    "/_bench/cdr-static",
                    params={"pbx": CDR_PBX, "datestart": day, "datestop": day},
                    headers={"Accept-Encoding": "identity"},
                )
            ).content
        nginx = await start_nginx(body, GZIP_LEVEL)
        query = f"?datestart={day}&datestop={day}"
        pbx = f"&pbx={CDR_PBX}"
        ours = (server.port, [server.pid])
        routes: dict[str, tuple[tuple[int, list[int]], str, list[str], int]] = {
            "precomputed": (ours, f"/_bench/cdr-static{query}{pbx}", [], sizes["cdr"]),
            "cdr": (ours, f"/cdr{query}", [AUTH], sizes["cdr"]),
            "precomputed gzip": (
                ours,
                f"/_bench/cdr-static{query}{pbx}",
                [GZIP],
                sizes["cdr_gz"],
            ),
            "cdr gzip": (ours, f"/cdr{query}", [AUTH, GZIP], sizes["cdr_gz"]),
            "list precomputed": (
                ours,
                f"/_bench/list-static{query}{pbx}",
                [],
                sizes["list"],
            ),
            "list": (ours, f"/transcription{query}", [AUTH], sizes["list"]),
        }
        if nginx is not None:
            reference = (nginx.port, nginx.pids())
            routes["nginx static"] = (reference, nginx.path, [], sizes["cdr"])
            routes["nginx gzip_static"] = (reference, nginx.path, [GZIP], sizes["cdr_gz"])
        else:
            print("[cdr] note: nginx is not installed (apt-get install nginx); reference skipped")
        seconds = 2.0 if quick else 4.0
        rounds = 1 if quick else 2
        for _ in range(rounds):
            for conns in (1, 4):
                for name, ((port, pids), path, headers, size) in routes.items():
                    print(f"[cdr] {name}, {conns} client(s), {seconds:.0f}s")
                    outcome = await load(port, path, conns, seconds, size, headers, pids)
                    results.setdefault((name, conns), []).append(outcome)
        print(f"[cdr] /cdr, 1 client, while {WRITE_RATE:.0f} new calls/s are stored")
        await server.control("POST", "/_bench/write-cdrs", pbx=CDR_PBX, rate=WRITE_RATE)
        try:
            for _ in range(rounds):
                path = routes["cdr"][1]
                outcome = await load(server.port, path, 1, seconds, sizes["cdr"], [AUTH], ours[1])
                results.setdefault(("cdr, writing", 1), []).append(outcome)
        finally:
            written = await server.control("POST", "/_bench/write-cdrs/stop", pbx=CDR_PBX)
    finally:
        if nginx is not None:
            await nginx.stop()
        await server.stop()

    stats = {key: summarise(runs) for key, runs in results.items()}
    print_table(stats)
    print(
        "  in-process CallStore.cdr_page (median): "
        + ", ".join(f"{k} {ms(v)}" for k, v in breakdown.items())
        + f"; {written['written']} calls stored during the write run"
    )
    print()
    report.details["cdr"] = {
        "runs": {f"{k[0]}-c{k[1]}": v for k, v in stats.items()},
        "in_process_s": breakdown,
        "sizes": sizes,
        "written_during_write_run": written["written"],
    }
    if any(s["errors"] for s in stats.values()):
        report.fail(suite, "load errors", "non-200 or short responses; see logs")
    verdicts(report, stats, breakdown, seconds * rounds)


def print_table(stats: dict[tuple[str, int], dict[str, float]]) -> None:
    rows = [
        [
            name,
            str(conns),
            str(int(s["requests"])),
            str(int(s["errors"])),
            ms(s["p50"]),
            ms(s["p99"]),
            f"{s['rps']:.1f}",
            f"{s['cpu_per_request'] * 1000:.2f}",
            f"{s['server_cpu']:.2f}",
            f"{s['other_cpu']:.2f}",
        ]
        for (name, conns), s in stats.items()
    ]
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
                "srv ms CPU/req",
                "srv cores",
                "other cores",
            ],
            rows,
            right=(1, 2, 3, 4, 5, 6, 7, 8, 9),
        )
    )


def verdicts(
    report: Report,
    stats: dict[tuple[str, int], dict[str, float]],
    breakdown: dict[str, float],
    write_seconds: float,
) -> None:
    suite = "cdr"
    pairs = (
        ("/cdr", "cdr", "precomputed"),
        ("/cdr gzip", "cdr gzip", "precomputed gzip"),
        (f"/transcription ({LIST_ROWS} rows)", "list", "list precomputed"),
    )
    for label, ours, base in pairs:
        one, four = stats[(ours, 1)], stats[(ours, 4)]
        base_one, base_four = stats[(base, 1)], stats[(base, 4)]
        lat_ratio = one["p50"] / base_one["p50"]
        thr_ratio = base_four["rps"] / four["rps"]
        report.add(
            suite,
            f"{label} p50 vs precomputed, 1 client",
            f"{lat_ratio:.2f}x",
            f"<= {RATIO_TARGET}x",
            lat_ratio <= RATIO_TARGET,
            f"{ms(one['p50'])} vs {ms(base_one['p50'])}",
        )
        report.add(
            suite,
            f"{label} req/s vs precomputed, 4 clients",
            f"{thr_ratio:.2f}x slower",
            f"<= {RATIO_TARGET}x",
            thr_ratio <= RATIO_TARGET,
            f"{four['rps']:.0f} vs {base_four['rps']:.0f} req/s",
        )
    for name in ("nginx static", "nginx gzip_static"):
        if (name, 4) not in stats:
            report.add(suite, "nginx reference", "skipped", note="nginx not installed")
            break
        ref = stats[(name, 4)]
        ours = stats[("cdr" if name == "nginx static" else "cdr gzip", 4)]
        report.add(
            suite,
            f"{name} (reference), 4 clients",
            f"{ref['rps']:.0f} req/s",
            note=f"p50 {ms(ref['p50'])}, {ref['cpu_per_request'] * 1000:.2f} ms CPU/req; "
            f"ours {ours['rps']:.0f} req/s, {ours['cpu_per_request'] * 1000:.2f} ms CPU/req",
        )
    uncached = breakdown["uncached"]
    report.add(
        suite,
        "uncached page, SQLite, per 10,000 rows",
        ms(uncached),
        f"<= {ms(UNCACHED_TARGET_S)}",
        uncached <= UNCACHED_TARGET_S,
        f"cached (fingerprint only): {ms(breakdown['cached'])}",
    )
    if "pg_uncached" in breakdown:
        factor = breakdown["pg_uncached"] / uncached
        report.add(
            suite,
            "uncached page, PostgreSQL vs SQLite",
            f"{factor:.2f}x",
            f"<= {PG_FACTOR_TARGET}x",
            factor <= PG_FACTOR_TARGET,
            f"{ms(breakdown['pg_uncached'])}; cached {ms(breakdown['pg_cached'])}",
        )
    else:
        report.add(suite, "uncached page, PostgreSQL", "skipped", note="no BENCH_PG_URL")
    idle, busy = stats[("cdr", 1)], stats[("cdr, writing", 1)]
    factor = busy["p99"] / idle["p99"]
    report.add(
        suite,
        f"/cdr p99 while storing {WRITE_RATE:.0f} calls/s vs idle",
        f"{factor:.2f}x",
        f"<= {WRITE_P99_TARGET}x",
        factor <= WRITE_P99_TARGET,
        f"{ms(busy['p99'])} vs {ms(idle['p99'])} ({write_seconds:.0f}s)",
    )
