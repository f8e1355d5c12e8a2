"""`python -m bench`: the performance benchmarks of cloudpbx (docs/benchmarks.md).

    .venv/bin/python -m bench               # full run, several minutes
    .venv/bin/python -m bench --quick       # smoke run, about a minute
    .venv/bin/python -m bench --only cdr    # one suite: cdr, fanout, channels, memory,
                                            # keepalive, storefirst, transcription, ami,
                                            # scaleout, amiengine

Every server runs in its own process on 127.0.0.1, the load in other processes. Numbers
go to stdout as tables, and to .bench-data/results-{quick,full}.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable

import orjson

from bench import (
    ami,
    amiengine,
    cdr,
    channels,
    fanout,
    keepalive,
    memory,
    scaleout,
    storefirst,
    transcription,
)
from bench.common import DATA_DIR, raise_fd_limit, wait_for_quiet
from bench.report import Report, summary

SUITES = (
    "cdr",
    "fanout",
    "channels",
    "memory",
    "keepalive",
    "storefirst",
    "transcription",
    "ami",
    "scaleout",
    "amiengine",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (~1 minute)")
    parser.add_argument(
        "--only", choices=SUITES, action="append", help="run only this suite (repeatable)"
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the servers under test (default: asyncio, as `cloudpbx serve`)",
    )
    parser.add_argument(
        "--ws-procs", type=int, default=2, choices=(2, 3, 4), help="WebSocket client processes"
    )
    parser.add_argument(
        "--ws-compression",
        choices=("off", "on"),
        default="off",
        help="whether clients offer permessage-deflate (default off; see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--ws-client",
        choices=("websockets", "raw"),
        default="websockets",
        help="WebSocket client: the websockets asyncio client, or a minimal raw RFC 6455 one",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each suite, wait up to this long for other load to drop "
        "(default 30, quick 10)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="diagnostics: cProfile the server during the 60 events/s fan-out step and the "
        "10,000/s many-channel step, and "
        "tracemalloc the idle connections (written under .bench-data/)",
    )
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> Report:
    report = Report()
    suites = args.only or list(SUITES)
    compression = args.ws_compression == "on"

    async def quiet(suite: str) -> None:
        if args.wait_quiet <= 0:
            return
        load = await wait_for_quiet(args.wait_quiet)
        report.details.setdefault("background_cores", {})[suite] = load
        if load >= 0.4:
            print(f"[{suite}] note: other processes keep {load:.1f} of the CPUs busy")

    ws_args = {
        "loop": args.loop,
        "procs": args.ws_procs,
        "compression": compression,
        "client": args.ws_client,
    }
    runs: dict[str, Callable[[], Awaitable[None]]] = {
        "cdr": lambda: cdr.run(report, quick=args.quick, loop=args.loop),
        "fanout": lambda: fanout.run(report, quick=args.quick, profile=args.profile, **ws_args),
        "channels": lambda: channels.run(report, quick=args.quick, profile=args.profile, **ws_args),
        "memory": lambda: memory.run(report, quick=args.quick, profile=args.profile, **ws_args),
        "keepalive": lambda: keepalive.run(report, quick=args.quick, **ws_args),
        "storefirst": lambda: storefirst.run(report, quick=args.quick, **ws_args),
        "transcription": lambda: transcription.run(report, quick=args.quick),
        "ami": lambda: ami.run(report, quick=args.quick),
        "scaleout": lambda: scaleout.run(report, quick=args.quick),
        "amiengine": lambda: amiengine.run(report, quick=args.quick),
    }
    for suite in SUITES:
        if suite in suites:
            started = time.monotonic()
            await quiet(suite)
            await runs[suite]()
            seconds = time.monotonic() - started
            report.details.setdefault("suite_seconds", {})[suite] = seconds
            print(f"[{suite}] took {seconds:.0f}s (waiting for quiet included)")
    return report


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.wait_quiet is None:
        args.wait_quiet = 10.0 if args.quick else 30.0
    raise_fd_limit()
    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    print(
        f"cloudpbx benchmarks ({mode}): python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, server loop {args.loop}, "
        f"ws client {args.ws_client}, compression {args.ws_compression}, "
        f"{args.ws_procs} client processes"
    )
    report = asyncio.run(main(args))
    elapsed = time.monotonic() - started
    print("=" * 100)
    print(summary(report))
    took = ", ".join(f"{k} {v:.0f}s" for k, v in report.details.get("suite_seconds", {}).items())
    print(f"\n({mode} run, {elapsed:.0f}s: {took}; details in .bench-data/results-{mode}.json)")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / f"results-{mode}.json").write_bytes(
        orjson.dumps(
            {
                "mode": mode,
                "args": vars(args),
                "seconds": elapsed,
                "cpus": os.cpu_count(),
                **report.as_json(),
            },
            # Non-string keys: the transcription suite's details are keyed by ints.
            option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
        )
    )
    return 1 if any(r.verdict == "FAIL" for r in report.rows) else 0


if __name__ == "__main__":
    sys.exit(run())
