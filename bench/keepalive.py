"""Benchmark: the CPU that keep-alive pings cost with 10,000 idle WebSocket connections.

Two cloudpbx servers, each with 10,000 idle connections (clients that answer pings, in
2-4 processes): one with the default keep-alive (`ws_ping_interval` 2.5 s), the baseline
with pings practically off (`ws_ping_interval` 1 hour). Server CPU is read from /proc over
the same window on both; the difference is what the pings, their pongs and the sweep cost.
Target: at most 3 % of one core.
"""

from __future__ import annotations

import asyncio

from bench.common import CpuMeter
from bench.report import Report, table
from bench.seed import ws_database
from bench.servers import Server, start_cloudpbx
from bench.wsload import close_clients, open_clients, wait_subscribers

CONNECTIONS = 10_000
TARGET_CORES = 0.03
SETTINGS = {
    "keep-alive 2.5 s": {"CLOUDPBX_WS_PING_INTERVAL": "2.5"},
    "pings off (baseline)": {"CLOUDPBX_WS_PING_INTERVAL": "3600"},
}


async def _idle_cpu(server: Server, seconds: float) -> tuple[float, float]:
    """(server cores, other cores) over `seconds` of idleness."""
    meter = CpuMeter({"server": [server.pid]})
    meter.start()
    await asyncio.sleep(seconds)
    cpu = meter.stop()
    return cpu["server"], cpu["other"]


async def run(
    report: Report, *, quick: bool, loop: str, procs: int, compression: bool, client: str
) -> None:
    suite = "keepalive"
    count = 2_000 if quick else CONNECTIONS
    window = 10.0 if quick else 30.0
    results: dict[str, dict[str, float]] = {}
    for label, env in SETTINGS.items():
        server = await start_cloudpbx(
            f"keepalive-{len(results)}", await ws_database(f"keepalive{len(results)}"), loop, env
        )
        clients = None
        try:
            print(f"[keepalive] {label}: opening {count:,} idle connections")
            clients = await open_clients(server, count, procs, "keepalive", compression, client)
            held = await wait_subscribers(server, clients.ok, within=60)
            if clients.failed or held != count:
                raise RuntimeError(f"{clients.ok} connected, {held} held, of {count}")
            await asyncio.sleep(5.0)  # past the connect burst and the first pings
            cores, other = await _idle_cpu(server, window)
            still = await wait_subscribers(server, count, within=5)
            results[label] = {"cores": cores, "other": other, "held_after": float(still)}
            print(
                f"[keepalive] {label}: server {cores * 100:.2f} % of a core, "
                f"other {other:.2f} cores, {still:,} still connected"
            )
        except Exception as exc:
            report.fail(suite, label, f"{type(exc).__name__}: {exc}")
        finally:
            if clients is not None:
                await close_clients(clients)
            await server.stop()
    report.details["keepalive"] = results
    if len(results) < len(SETTINGS):
        return
    ours, base = (results[label] for label in SETTINGS)
    cost = max(0.0, ours["cores"] - base["cores"])
    print()
    print(
        table(
            ["server", "server CPU (% of a core)", "other cores", "connected after"],
            [
                [k, f"{r['cores'] * 100:.2f}", f"{r['other']:.2f}", f"{r['held_after']:,.0f}"]
                for k, r in results.items()
            ],
            right=(1, 2, 3),
        )
    )
    print()
    report.add(
        suite,
        f"keep-alive CPU, {count:,} idle connections",
        f"{cost * 100:.2f} % of a core",
        "<= 3 %",
        cost <= TARGET_CORES and ours["held_after"] == count,
        f"{ours['cores'] * 100:.2f} % with pings, {base['cores'] * 100:.2f} % without",
    )
