"""The server under test: the real cloudpbx app under uvicorn, plus bench-only routes.

Run as `python -m bench.serve` with `CLOUDPBX_*` environment variables (the project's own
settings loader); it prints one JSON line `{"event": "ready", "port": ..., "pid": ...}`
on stdout once it listens. Configuration is exactly `cloudpbx.server.uvicorn_config` (the
production one); the only additions are routes under `/_bench/` on the same app:

- `GET /_bench/cdr-static?pbx=&datestart=&datestop=`: the same `/cdr` page bytes,
  computed once and then served precomputed (the framework baseline, no auth, no DB);
- `GET /_bench/cdr-cached?datestart=&datestop=` (auth as /cdr): a prototype of the page
  cache proposed in docs/benchmarks.md, to measure what it would give;
- `POST /_bench/publish?pbx=&count=&rate=&step=`: publish `count` `subscriber` events
  through `EventHub.publish` at `rate` per second; `connectPeerName` carries the time the
  event was scheduled for (wall clock), `connectPeerNumber` the step number; the publisher
  gives up when more than `max_behind` seconds behind;
- `GET /_bench/stats?pbx=`: subscribers on the PBX's channel, pid, RSS;
- `POST /_bench/profile/start`, `POST /_bench/profile/stop?path=`: cProfile of the event
  loop thread, written as a sorted text report;
- `POST /_bench/tracemalloc/start`, `POST /_bench/tracemalloc/report?path=&count=`: where
  the Python heap grew in between (per connection), by file and by line;
- `POST /_bench/shutdown`: a clean stop (lifespan shutdown runs, no signal involved).

`BENCH_HUB=publish-first` makes the hub publish before storing (the order before
store-first), the baseline of bench/storefirst.py.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import os
import pstats
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import func, select
from starlette.responses import Response

from bench.common import emit, install_uvloop, raise_fd_limit, rss_kib, until_orphaned
from cloudpbx.api.auth import bearer_token, tenant_for_key
from cloudpbx.api.responses import OrjsonResponse, page_response
from cloudpbx.domain.dates import date_range
from cloudpbx.domain.events import Event, Subscriber, channel_name
from cloudpbx.domain.states import DeviceState
from cloudpbx.ports.bus import WireMessage
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.server import attach_backends, freeze_startup_heap, uvicorn_config
from cloudpbx.services.events import EventHub
from cloudpbx.settings import load_settings
from cloudpbx.storage.json_rows import JsonPage
from cloudpbx.storage.tables import cdr
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
            await hub.bus.publish(channel_name(tenant.name), message)
        return messages

    async def stored_only(pbx_id: int, stored: list[tuple[int, WireMessage]]) -> None:
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


def install_bench_routes(app: FastAPI, runtime: Runtime, server: uvicorn.Server) -> None:
    pages: dict[tuple[str, str, str], JsonPage] = {}
    profiler: dict[str, cProfile.Profile] = {}
    pauses = GcPauses()
    snapshots: dict[str, tracemalloc.Snapshot] = {}

    async def cdr_static(pbx: str, datestart: str, datestop: str) -> Response:
        key = (pbx, datestart, datestop)
        page = pages.get(key)
        if page is None:
            tenant = await runtime.tenants.require(pbx)
            period = date_range(datestart, datestop, tenant.zone)
            page = await runtime.calls.cdr_page(tenant, period, runtime.settings.cdr_cap)
            pages[key] = page
        return page_response(page)

    cached: dict[tuple[int, object, object], tuple[tuple[int, int], JsonPage]] = {}

    async def cdr_cached(request: Request, datestart: str, datestop: str) -> Response:
        """Prototype of a proposed fix (not in src): /cdr with a page cache. CDR rows are
        append-only, so `count(*), max(id)` over the range (a covering-index probe,
        < 1 ms) tells whether a cached page is still exact."""
        key_text = bearer_token(request.headers.get("authorization"))
        tenant = await tenant_for_key(runtime, key_text)
        period = date_range(datestart, datestop, tenant.zone)
        low, high = period.utc_bounds()
        probe = select(func.count(), func.max(cdr.c.id)).where(
            cdr.c.pbx_id == tenant.id, cdr.c.started_at >= low, cdr.c.started_at < high
        )
        async with runtime.engine.connect() as conn:
            count, newest = (await conn.execute(probe)).one()
        version = (int(count), int(newest or 0))
        key = (tenant.id, low, high)
        hit = cached.get(key)
        if hit is not None and hit[0] == version:
            return page_response(hit[1])
        page = await runtime.calls.cdr_page(tenant, period, runtime.settings.cdr_cap)
        cached[key] = (version, page)
        return page_response(page)

    async def publish(
        pbx: str, count: int, rate: float, step: int = 0, max_behind: float = 3.0
    ) -> Response:
        tenant = await runtime.tenants.require(pbx)
        loop = asyncio.get_running_loop()
        hub = runtime.hub
        pauses.take()
        peer = f"{pbx}-101"
        step_tag = str(step)
        start = loop.time()
        wall_start = time.time()
        behind_max = 0.0
        published = 0
        for index in range(count):
            delay = start + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind_max = max(behind_max, -delay)
                if behind_max > max_behind:
                    break  # saturated: a longer backlog would measure only the backlog
                await asyncio.sleep(0)  # never starve the senders, even when behind
            published += 1
            # The scheduled time, not the actual one: a publisher held up by a busy loop
            # shows as latency (no coordinated omission).
            scheduled = repr(wall_start + index / rate)
            event = Subscriber(peer, DeviceState.IN_USE, step_tag, scheduled)
            await hub.publish(tenant, [event])
        elapsed = loop.time() - start
        return OrjsonResponse(
            {
                "published": published,
                "t_first": wall_start,
                "elapsed": elapsed,
                "behind_max": behind_max,
                "gc": pauses.take(),
            }
        )

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

    app.add_api_route("/_bench/cdr-static", cdr_static, methods=["GET"])
    app.add_api_route("/_bench/cdr-cached", cdr_cached, methods=["GET"])
    app.add_api_route("/_bench/publish", publish, methods=["POST"])
    app.add_api_route("/_bench/stats", stats, methods=["GET"])
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
