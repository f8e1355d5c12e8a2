"""The fan-out baseline: a plain `websockets` library server, no framework, no app.

It accepts any WebSocket connection and keeps it in a set; `POST /_bench/publish` (an
HTTP request answered from `process_request`) sends `count` messages at `rate` per
second with `websockets.broadcast`, each the same JSON shape and size as cloudpbx's
messages (`{"id", "channel", "text": {"subscriber": {...}}}`), with the time each was
scheduled for, as in bench/serve.py, and ids that go on rising from step to step. It
answers with the longest event-loop stall while publishing (the same monitor as
bench/serve.py's). It pings every 2.5 s, as cloudpbx does by default.
`GET /_bench/stats` answers the connection count, pid and RSS. Prints
`{"event": "ready", "port": ..., "pid": ...}` on stdout once it listens.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from bench.common import (
    HOST,
    LoopLag,
    emit,
    install_uvloop,
    raise_fd_limit,
    rss_kib,
    until_orphaned,
)

CLIENTS: set[ServerConnection] = set()
IDS = itertools.count(1)


async def handler(connection: ServerConnection) -> None:
    CLIENTS.add(connection)
    try:
        async for _ in connection:  # clients say nothing; read until they leave
            pass
    finally:
        CLIENTS.discard(connection)


async def publish(
    channel: str, count: int, rate: float, step: int, max_behind: float
) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    lag = LoopLag()
    lag.start()
    start = loop.time()
    wall_start = time.time()
    behind_max = 0.0
    peer = f"{channel.removeprefix('pbx_')}-101"
    published = 0
    for index in range(count):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind_max = max(behind_max, -delay)
            if behind_max > max_behind:
                break  # saturated: a longer backlog would measure only the backlog
            await asyncio.sleep(0)
        published += 1
        text = {
            "subscriber": {
                "peer": peer,
                "statusValue": 1,
                "connectPeerNumber": str(step),
                "connectPeerName": repr(wall_start + index / rate),  # scheduled time
            }
        }
        data = orjson.dumps({"id": next(IDS), "channel": channel, "text": text}).decode()
        broadcast(CLIENTS, data)
    return {
        "published": published,
        "t_first": wall_start,
        "elapsed": loop.time() - start,
        "behind_max": behind_max,
        "loop_lag_s": lag.stop(),  # (wall, busy)
    }


def _json(connection: ServerConnection, body: object) -> Response:
    response = connection.respond(HTTPStatus.OK, orjson.dumps(body).decode())
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


async def process_request(connection: ServerConnection, request: Request) -> Response | None:
    url = urlsplit(request.path)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    if url.path == "/_bench/publish":
        result = await publish(
            f"pbx_{query.get('pbx', 'BenchWs')}",
            int(query["count"]),
            float(query["rate"]),
            int(query.get("step", "0")),
            float(query.get("max_behind", "3")),
        )
        return _json(connection, result)
    if url.path == "/_bench/stats":
        return _json(
            connection,
            {"pid": os.getpid(), "rss_kib": rss_kib(os.getpid()), "subscribers": len(CLIENTS)},
        )
    if url.path == "/_bench/shutdown":
        SHUTDOWN.set()
        return _json(connection, {"stopping": True})
    return None


SHUTDOWN: asyncio.Event


async def main() -> None:
    global SHUTDOWN
    raise_fd_limit()
    SHUTDOWN = asyncio.Event()
    async with serve(
        handler,
        HOST,
        0,
        process_request=process_request,
        compression="deflate",  # accepted when the client offers it, as uvicorn does
        open_timeout=120,  # a publish request is answered only after its last message
        ping_interval=2.5,
        ping_timeout=20,
        max_queue=16,
        backlog=2048,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        emit({"event": "ready", "port": port, "pid": os.getpid()})
        watchdog = asyncio.create_task(until_orphaned())
        watchdog.add_done_callback(lambda _: SHUTDOWN.set())
        await SHUTDOWN.wait()
        watchdog.cancel()
        server.close()


if __name__ == "__main__":
    if os.environ.get("BENCH_LOOP", "asyncio") == "uvloop":
        install_uvloop()
    asyncio.run(main())
    sys.exit(0)
