"""Benchmark: what storing before publishing costs in publish-to-client latency.

Two cloudpbx servers with the same clients (500 connections by default, in 2-4 processes)
and the same steady load (20 events/s for 10 s, the fan-out suite's publisher): the
production hub, which stores each group commit (every `ws_commit_interval`, 5 ms) before
any client sees it, and the baseline `BENCH_HUB=publish-first` (bench/serve.py), which
sends at once and stores afterwards, as before store-first. The steps alternate between
the two (twice each), so background noise hits both alike; the median of each is reported.
"""

from __future__ import annotations

import statistics

from bench.report import Report, ms, table
from bench.seed import ws_database
from bench.servers import Server, start_cloudpbx
from bench.wsload import (
    Clients,
    StepResult,
    close_clients,
    open_clients,
    run_step,
    wait_subscribers,
)

CLIENTS = 500
RATE = 20.0
SERVERS = {"store-first": {}, "publish-first (baseline)": {"BENCH_HUB": "publish-first"}}


async def run(
    report: Report, *, quick: bool, loop: str, procs: int, compression: bool, client: str
) -> None:
    suite = "storefirst"
    count = CLIENTS // 5 if quick else CLIENTS
    seconds = 5.0 if quick else 10.0
    servers: dict[str, Server] = {}
    clients: dict[str, Clients] = {}
    steps: dict[str, list[StepResult]] = {label: [] for label in SERVERS}
    try:
        for index, (label, env) in enumerate(SERVERS.items()):
            database = await ws_database(f"storefirst{index}")
            servers[label] = await start_cloudpbx(f"storefirst-{index}", database, loop, env)
            clients[label] = await open_clients(
                servers[label], count, procs, f"storefirst{index}", compression, client
            )
            await wait_subscribers(servers[label], clients[label].ok)
        step_no = 1
        for _ in range(2):
            for label in SERVERS:
                step_no += 1
                step = await run_step(
                    servers[label], clients[label], step_no, RATE, round(RATE * seconds), 10
                )
                steps[label].append(step)
                print(
                    f"[storefirst] {label}: p50 {ms(step.p50)}, p99 {ms(step.p99)}, "
                    f"lost {step.lost}, server {step.server_cores:.2f} cores, "
                    f"other {step.other_cores:.2f}"
                )
    except Exception as exc:
        report.fail(suite, "latency", f"{type(exc).__name__}: {exc}")
        return
    finally:
        for group in clients.values():
            await close_clients(group)
        for server in servers.values():
            await server.stop()
    medians = {
        label: {
            "p50": statistics.median(s.p50 for s in runs),
            "p99": statistics.median(s.p99 for s in runs),
            "lost": float(sum(s.lost for s in runs)),
        }
        for label, runs in steps.items()
    }
    report.details["storefirst"] = {
        "steps": {label: [s.as_json() for s in runs] for label, runs in steps.items()},
        "medians": medians,
    }
    print()
    print(
        table(
            ["hub", "p50", "p99", "lost"],
            [[k, ms(v["p50"]), ms(v["p99"]), f"{v['lost']:.0f}"] for k, v in medians.items()],
            right=(1, 2, 3),
        )
    )
    print()
    ours, base = (medians[label] for label in SERVERS)
    note = f"{count} clients x {RATE:.0f} events/s; baseline publish-first"
    report.add(suite, "store-first p50 latency added", ms(ours["p50"] - base["p50"]), note=note)
    report.add(suite, "store-first p99 latency added", ms(ours["p99"] - base["p99"]), note=note)
    report.add(suite, "messages lost", f"{ours['lost']:.0f}", "0", ours["lost"] == 0)
