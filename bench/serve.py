"""The server under test: the real cloudpbx app under uvicorn, plus bench-only routes.

Run as `python -m bench.serve` with `CLOUDPBX_*` environment variables (the project's own
settings loader); it prints one JSON line `{"event": "ready", "port": ..., "pid": ...}`
on stdout once it listens. Configuration is exactly `cloudpbx.server.uvicorn_config` (the
production one); the only additions are routes under `/_bench/` on the same app:

- `GET /_bench/cdr-static?pbx=&datestart=&datestop=`: the same `/cdr` page bytes,
  computed once and then served precomputed through the same response code (ETag, gzip
  once) from a plain Starlette endpoint: the framework baseline, no auth, no DB, no
  FastAPI parameter handling;
- `GET /_bench/list-static?pbx=&datestart=&datestop=`: the same for `/transcription`;
- `POST /_bench/write-cdrs?pbx=&rate=`, `POST /_bench/write-cdrs/stop?pbx=`: store new
  calls at `rate` per second through `runtime.ingest` (the backends' write path) meanwhile;
- `POST /_bench/publish?pbx=&count=&rate=&step=`: publish `count` `subscriber` events
  through `EventHub.publish` at `rate` per second; `connectPeerName` carries the time the
  event was scheduled for (wall clock), `connectPeerNumber` the step number; the publisher
  gives up when more than `max_behind` seconds behind;
- `POST /_bench/publish-many?pbxes=&count=&rate=&step=`: the same over the first `pbxes`
  PBXes of the many-channel database (bench.seed.channels_database), interleaved:
  `rate` is the total per second, each PBX gets `count`;
- `POST /_bench/warm-many?pbxes=`: one event to each of those PBXes, 100 at a time;
- `POST /_bench/gc-full`: objects the garbage collector tracks, and the time of one full
  collection (what a generation-2 pass stalls the loop for);
- `GET /_bench/stats?pbx=`: subscribers on the PBX's channel, pid, RSS;
- `GET /_bench/stats-many?pbxes=`: subscribers summed over the first `pbxes` PBXes;
- `POST /_bench/profile/start`, `POST /_bench/profile/stop?path=`: cProfile of the event
  loop thread, written as a sorted text report;
- `POST /_bench/tracemalloc/start`, `POST /_bench/tracemalloc/report?path=&count=`: where
  the Python heap grew in between (per connection), by file and by line;
- `POST /_bench/shutdown`: a clean stop (lifespan shutdown runs, no signal involved).

`BENCH_HUB=publish-first` makes the hub publish before storing (the order before
store-first), the baseline of bench/storefirst.py. `BENCH_GC_THRESHOLD=A,B,C` sets the
garbage collector's thresholds after start-up (an experiment; `src` keeps the defaults).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import io
import os
import pstats
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import LoopLag, emit, install_uvloop, raise_fd_limit, rss_kib, until_orphaned
from bench.seed import channel_pbx
from cloudpbx.api.responses import OrjsonResponse, page_response
from cloudpbx.domain.dates import date_range
from cloudpbx.domain.events import Event, Subscriber, channel_name
from cloudpbx.domain.records import CdrRecord
from cloudpbx.domain.states import DeviceState, Disposition
from cloudpbx.ports.bus import WireMessage
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.server import attach_backends, freeze_startup_heap, uvicorn_config
from cloudpbx.services.events import EventHub
from cloudpbx.settings import load_settings
from cloudpbx.storage.json_rows import JsonPage
from cloudpbx.storage.tenants import Tenant


def starlette_ws_route(app: FastAPI) -> None:
    """Experiment (BENCH_WS_ROUTE=starlette): serve cloudpbx's own WebSocket handler from a
    plain Starlette WebSocketRoute placed before FastAPI's route, i.e. without FastAPI's
    dependency machinery and exit stacks around each connection."""
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from cloudpbx.api.ws import pbx_events

    async def endpoint(websocket: WebSocket) -> None:
        await pbx_events(websocket, websocket.path_params["channel"])

    app.router.routes.insert(0, WebSocketRoute("/ws/{channel:path}", endpoint))


def publish_before_storing(hub: EventHub) -> None:
    """Baseline (BENCH_HUB=publish-first): the order before store-first, for comparison.
    Messages go to the bus as soon as they are numbered; the group commit stores them
    afterwards and delivers nothing itself."""
    publish = hub.publish

    async def publish_first(tenant: Tenant, events: Sequence[Event]) -> list[WireMessage]:
        messages = await publish(tenant, events)
        for message in messages:
            hub.bus.publish_batch(channel_name(tenant.name), [message])
        return messages

    def stored_only(pbx_id: int, stored: list[tuple[int, WireMessage]]) -> None:
        return None

    hub.publish = publish_first  # type: ignore[method-assign]
    hub._deliver = stored_only  # type: ignore[method-assign]


class GcPauses:
    """Longest garbage-collector pause per generation since the last `take()`."""

    def __init__(self) -> None:
        self.started = 0.0
        self.longest = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        generation = int(info["generation"])
        self.longest[generation] = max(self.longest[generation], time.perf_counter() - self.started)
        self.count[generation] += 1

    def take(self) -> dict[str, list[float] | list[int]]:
        out: dict[str, list[float] | list[int]] = {
            "longest_s": list(self.longest),
            "count": list(self.count),
        }
        self.longest = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        return out


def _page_query(request: Request) -> tuple[str, str, str]:
    query = request.query_params
    return query["pbx"], query["datestart"], query["datestop"]


def install_bench_routes(app: FastAPI, runtime: Runtime, server: uvicorn.Server) -> None:
    pages: dict[tuple[str, str, str], JsonPage] = {}
    profiler: dict[str, cProfile.Profile] = {}
    pauses = GcPauses()
    lag = LoopLag()
    many: list[Tenant] = []  # the many-channel PBXes, resolved once
    snapshots: dict[str, tracemalloc.Snapshot] = {}

    # The precomputed baselines are plain Starlette endpoints: no FastAPI parameter
    # handling, so that they stay the floor once /cdr skips it too (api/lean_route.py).
    async def cdr_static(request: Request) -> Response:
        pbx, datestart, datestop = _page_query(request)
        key = ("cdr", pbx, datestart, datestop)
        page = pages.get(key)
        if page is None:
            tenant = await runtime.tenants.require(pbx)
            period = date_range(datestart, datestop, tenant.zone)
            page = await runtime.calls.cdr_page(tenant, period, runtime.settings.cdr_cap)
            pages[key] = page
        return await page_response(request, page)

    async def list_static(request: Request) -> Response:
        pbx, datestart, datestop = _page_query(request)
        key = ("transcription", pbx, datestart, datestop)
        page = pages.get(key)
        if page is None:
            tenant = await runtime.tenants.require(pbx)
            period = date_range(datestart, datestop, tenant.zone)
            cap = runtime.settings.transcription_cap
            page = await runtime.calls.transcription_page(tenant, period, cap)
            pages[key] = page
        return await page_response(request, page)

    writers: dict[str, tuple[asyncio.Task[None], list[int]]] = {}

    async def write_cdrs(pbx: str, rate: float) -> Response:
        """Store `rate` new calls per second (today's, one row per transaction) through
        the ingest path the backends use, until `/_bench/write-cdrs/stop`."""
        written = [0]

        async def writer() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            while True:
                delay = start + written[0] / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = datetime.now(UTC)
                record = CdrRecord(
                    now, '"Bench" <101>', "101", "600100200", "SIP/bench-101", "SIP/trunk",
                    "Dial", 60, 55, Disposition.ANSWERED, f"{now.timestamp():.6f}", 12, "lokalne",
                )  # fmt: skip
                await runtime.ingest.cdr(pbx, record)
                written[0] += 1

        writers[pbx] = (asyncio.create_task(writer()), written)
        return OrjsonResponse({"writing": rate})

    async def write_cdrs_stop(pbx: str) -> Response:
        task, written = writers.pop(pbx)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return OrjsonResponse({"written": written[0]})

    async def publish_scheduled(
        tenants: Sequence[Tenant], count: int, rate: float, step: int, max_behind: float
    ) -> dict[str, Any]:
        """`count` events per tenant, interleaved, `rate` per second in all, each through
        `EventHub.publish` when it is due; the answer says how far it got and how long
        the event loop and the garbage collector stalled meanwhile."""
        loop = asyncio.get_running_loop()
        hub = runtime.hub
        pauses.take()
        lag.start()
        step_tag = str(step)
        start = loop.time()
        wall_start = time.time()
        behind_max = 0.0
        published = 0
        # When behind, yield once per millisecond of schedule (each event at 1,000/s or
        # less): enough for the senders, without a loop turn per event at 20,000/s.
        every = max(1, round(rate / 1000))
        for index in range(count * len(tenants)):
            delay = start + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif index % every == 0:
                behind_max = max(behind_max, -delay)
                if behind_max > max_behind:
                    break  # saturated: a longer backlog would measure only the backlog
                await asyncio.sleep(0)  # never starve the senders, even when behind
            tenant = tenants[index % len(tenants)]
            # The scheduled time, not the actual one: a publisher held up by a busy loop
            # shows as latency (no coordinated omission).
            scheduled = repr(wall_start + index / rate)
            event = Subscriber(f"{tenant.name}-101", DeviceState.IN_USE, step_tag, scheduled)
            await hub.publish(tenant, [event])
            published += 1
        elapsed = loop.time() - start
        return {
            "published": published // len(tenants),  # complete rounds: per tenant
            "t_first": wall_start,
            "elapsed": elapsed,
            "behind_max": behind_max,
            "gc": pauses.take(),
            "loop_lag_s": lag.stop(),  # (wall, busy)
        }

    async def publish(
        pbx: str, count: int, rate: float, step: int = 0, max_behind: float = 3.0
    ) -> Response:
        tenant = await runtime.tenants.require(pbx)
        return OrjsonResponse(await publish_scheduled([tenant], count, rate, step, max_behind))

    async def publish_many(
        pbxes: int, count: int, rate: float, step: int = 0, max_behind: float = 3.0
    ) -> Response:
        while len(many) < pbxes:
            many.append(await runtime.tenants.require(channel_pbx(len(many))))
        chosen = many[:pbxes]
        return OrjsonResponse(await publish_scheduled(chosen, count, rate, step, max_behind))

    async def warm_many(pbxes: int) -> Response:
        """One event to each of the first `pbxes` PBXes, 100 at a time: every channel
        loaded from the database and its first ids reserved before the measured steps
        (sequentially that is a database round trip or two per PBX)."""
        while len(many) < pbxes:
            many.append(await runtime.tenants.require(channel_pbx(len(many))))
        started = time.perf_counter()
        for first in range(0, pbxes, 100):
            chunk = many[first : min(pbxes, first + 100)]
            await asyncio.gather(
                *(
                    runtime.hub.publish(
                        t, [Subscriber(f"{t.name}-101", DeviceState.IDLE, "0", "0")]
                    )
                    for t in chunk
                )
            )
        return OrjsonResponse({"seconds": time.perf_counter() - started})

    async def gc_full() -> Response:
        """Objects the garbage collector tracks, and how long one full pass takes now:
        what a generation-2 collection would stall the event loop for."""
        tracked = len(gc.get_objects())
        wall, cpu = time.perf_counter(), time.thread_time()
        gc.collect()
        return OrjsonResponse(
            {
                "tracked": tracked,
                "frozen": gc.get_freeze_count(),
                "full_pass_s": time.perf_counter() - wall,
                "full_pass_cpu_s": time.thread_time() - cpu,
            }
        )

    async def stats_many(pbxes: int) -> Response:
        count = sum(runtime.bus.subscriber_count(f"pbx_{channel_pbx(n)}") for n in range(pbxes))
        return OrjsonResponse({"subscribers": count})

    async def stats(pbx: str = "") -> Response:
        gc.collect()
        return OrjsonResponse(
            {
                "pid": os.getpid(),
                "rss_kib": rss_kib(os.getpid()),
                "subscribers": runtime.bus.subscriber_count(f"pbx_{pbx}") if pbx else 0,
                "tasks": len(asyncio.all_tasks()),
            }
        )

    async def profile_start() -> Response:
        prof = cProfile.Profile()
        profiler["p"] = prof
        prof.enable()
        return OrjsonResponse({"profiling": True})

    async def profile_stop(path: str, limit: int = 45) -> Response:
        prof = profiler.pop("p", None)
        if prof is None:
            return OrjsonResponse({"profiling": False}, status_code=409)
        prof.disable()
        out = io.StringIO()
        report = pstats.Stats(prof, stream=out)
        report.sort_stats("tottime").print_stats(limit)
        report.sort_stats("cumulative").print_stats(limit)
        await asyncio.to_thread(Path(path).write_text, out.getvalue())
        return OrjsonResponse({"written": path})

    async def tracemalloc_start() -> Response:
        tracemalloc.start(6)
        snapshots["base"] = tracemalloc.take_snapshot()
        return OrjsonResponse({"tracing": True})

    async def tracemalloc_report(path: str, count: int = 1, limit: int = 30) -> Response:
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        base = snapshots.pop("base")
        out = io.StringIO()
        for key in ("filename", "lineno"):
            diff = snapshot.compare_to(base, key)
            grown = sum(d.size_diff for d in diff)
            out.write(f"== by {key}: +{grown / 1024:.0f} KiB, {grown / count / 1024:.1f} KiB ")
            out.write(f"per connection ({count})\n")
            for stat in diff[:limit]:
                out.write(
                    f"{stat.size_diff / count:9.0f} B/conn {stat.count_diff / count:6.1f} "
                    f"blocks/conn  {stat.traceback[0]}\n"
                )
        await asyncio.to_thread(Path(path).write_text, out.getvalue())
        return OrjsonResponse({"written": path})

    async def shutdown() -> Response:
        server.should_exit = True
        return OrjsonResponse({"stopping": True})

    app.router.routes.append(Route("/_bench/cdr-static", cdr_static, methods=["GET"]))
    app.router.routes.append(Route("/_bench/list-static", list_static, methods=["GET"]))
    app.add_api_route("/_bench/write-cdrs", write_cdrs, methods=["POST"])
    app.add_api_route("/_bench/write-cdrs/stop", write_cdrs_stop, methods=["POST"])
    app.add_api_route("/_bench/publish", publish, methods=["POST"])
    app.add_api_route("/_bench/publish-many", publish_many, methods=["POST"])
    app.add_api_route("/_bench/warm-many", warm_many, methods=["POST"])
    app.add_api_route("/_bench/gc-full", gc_full, methods=["POST"])
    app.add_api_route("/_bench/stats", stats, methods=["GET"])
    app.add_api_route("/_bench/stats-many", stats_many, methods=["GET"])
    app.add_api_route("/_bench/profile/start", profile_start, methods=["POST"])
    app.add_api_route("/_bench/profile/stop", profile_stop, methods=["POST"])
    app.add_api_route("/_bench/tracemalloc/start", tracemalloc_start, methods=["POST"])
    app.add_api_route("/_bench/tracemalloc/report", tracemalloc_report, methods=["POST"])
    app.add_api_route("/_bench/shutdown", shutdown, methods=["POST"])


async def main() -> None:
    raise_fd_limit()
    settings = load_settings()
    runtime = build_runtime(settings)
    await runtime.migrate()
    await attach_backends(runtime)
    config = uvicorn_config(runtime)
    server = uvicorn.Server(config)
    app: Any = config.app
    install_bench_routes(app, runtime, server)
    if os.environ.get("BENCH_HUB") == "publish-first":
        publish_before_storing(runtime.hub)
    if os.environ.get("BENCH_WS_ROUTE") == "starlette":
        starlette_ws_route(app)
    task = asyncio.create_task(server.serve())
    for _ in range(3000):  # up to 30 s
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        if task.done():
            task.result()
        raise RuntimeError("the server did not start in 30 s")
    port = server.servers[0].sockets[0].getsockname()[1]
    freeze_startup_heap()  # as `cloudpbx serve` does
    if thresholds := os.environ.get("BENCH_GC_THRESHOLD"):  # experiment: e.g. "20000,10,10"
        gc.set_threshold(*(int(t) for t in thresholds.split(",")))
    emit({"event": "ready", "port": port, "pid": os.getpid()})
    watchdog = asyncio.create_task(until_orphaned())
    watchdog.add_done_callback(lambda _: setattr(server, "should_exit", True))
    await task
    watchdog.cancel()


if __name__ == "__main__":
    # `cloudpbx serve` runs `asyncio.run(serve(...))`: the stdlib loop. BENCH_LOOP=uvloop
    # measures the same server on uvloop instead.
    if os.environ.get("BENCH_LOOP", "asyncio") == "uvloop":
        install_uvloop()
    asyncio.run(main())
