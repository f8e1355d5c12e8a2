"""nginx + nchan: the C reference of the WebSocket suites (issue 11).

The Debian packages (`apt-get install nginx-light libnginx-mod-nchan`) when installed;
otherwise the suites skip it with a note. One worker process (cloudpbx runs in one), no
access log. Clients subscribe to `/ws/pbx_NAME` (the query string is ignored: nchan does
no auth here); the bench publishes with `POST /pub?id=pbx_NAME` over one keep-alive
connection, the same JSON of the same size as the other servers send, with the time
each message was scheduled for. Messages are not stored (`nchan_store_messages off`):
pure fan-out, as the provider runs it. nchan pings every 3 s (its setting takes whole
seconds; cloudpbx pings every 2.5 s), and with `nchan_deflate_message_for_websocket` it
compresses each message once for every client that negotiated permessage-deflate.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import DATA_DIR, HOST, LOG_DIR, rss_kib
from bench.nginx import Nginx, free_port, launch, nginx_binary

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
LOG_NAME = "nchan.log"
CONFIG = """\
load_module {module};
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {log} warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {slots}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    nchan_shared_memory_size 256m;
    server {{
        listen {host}:{port} backlog=4096;
        location = /ready {{ return 200; }}
        location ~ ^/ws/(pbx_\\w+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
            nchan_websocket_ping_interval 3;
            nchan_deflate_message_for_websocket on;
        }}
        location = /pub {{
            nchan_publisher http;
            nchan_channel_id $arg_id;
            nchan_store_messages off;
        }}
    }}
}}
"""


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
) -> None:
    """One HTTP/1.1 POST on a kept-alive connection, its answer read and checked. By hand:
    the orchestrator publishes up to 200 a second and should spend its CPU on nothing
    else (an HTTP client library costs several times more per request)."""
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    status = await reader.readline()
    if not status.startswith((b"HTTP/1.1 201", b"HTTP/1.1 202")):
        raise RuntimeError(f"nchan refused a publish: {status!r}")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)


def available() -> str:
    """Why nginx + nchan cannot run here ("" when it can)."""
    if nginx_binary() is None:
        return "nginx is not installed (apt-get install nginx-light libnginx-mod-nchan)"
    if not MODULE.exists():
        return f"{MODULE} is missing (apt-get install libnginx-mod-nchan)"
    return ""


@dataclass
class NchanServer:
    nginx: Nginx
    kind: str = "nchan"
    last_id: int = 0
    """Ids go on rising from step to step, as cloudpbx's do."""

    @property
    def pids(self) -> list[int]:
        return self.nginx.pids()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.nginx.port}"

    def ws_url(self, pbx: str, key: str) -> str:
        return f"ws://{HOST}:{self.nginx.port}/ws/pbx_{pbx}?pbxkey={key}"

    async def control(
        self, method: str, route: str, within: float = 30.0, **params: Any
    ) -> dict[str, Any]:
        if route != "/_bench/publish":
            raise ValueError(f"nchan has no {route}")
        return await self.publish(
            f"pbx_{params['pbx']}",
            int(params["count"]),
            float(params["rate"]),
            int(params.get("step", 0)),
            float(params.get("max_behind", 3.0)),
        )

    async def publish(
        self, channel: str, count: int, rate: float, step: int, max_behind: float
    ) -> dict[str, Any]:
        """`count` messages at `rate` per second, each POSTed when it is due (the same
        schedule and message shape as bench/rawws.py)."""
        loop = asyncio.get_running_loop()
        peer = f"{channel.removeprefix('pbx_')}-101"
        published = 0
        behind_max = 0.0
        reader, writer = await asyncio.open_connection(HOST, self.nginx.port)
        try:
            start = loop.time()
            wall_start = time.time()
            for index in range(count):
                delay = start + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    behind_max = max(behind_max, -delay)
                    if behind_max > max_behind:
                        break
                text = {
                    "subscriber": {
                        "peer": peer,
                        "statusValue": 1,
                        "connectPeerNumber": str(step),
                        "connectPeerName": repr(wall_start + index / rate),
                    }
                }
                self.last_id += 1
                body = orjson.dumps({"id": self.last_id, "channel": channel, "text": text})
                await _post(reader, writer, f"/pub?id={channel}", body)
                published += 1
        finally:
            writer.close()
        return {
            "published": published,
            "t_first": wall_start,
            "elapsed": loop.time() - start,
            "behind_max": behind_max,
        }

    async def stats(self, pbx: str = "") -> dict[str, Any]:
        subscribers = 0
        if pbx:
            async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
                response = await client.get(
                    "/pub", params={"id": f"pbx_{pbx}"}, headers={"Accept": "text/json"}
                )
            if response.status_code == 200:  # 404: no such channel (nobody subscribed)
                subscribers = int(orjson.loads(response.content)["subscribers"])
        return {
            "pid": self.nginx.proc.pid,
            "rss_kib": sum(rss_kib(pid) for pid in self.pids),
            "subscribers": subscribers,
        }

    async def stop(self) -> None:
        await self.nginx.stop()


async def start_nchan(name: str, connections: int) -> NchanServer:
    """nginx + nchan on a free port, able to hold `connections` WebSocket clients."""
    binary = nginx_binary()
    if binary is None or available():
        raise RuntimeError(available())
    prefix = DATA_DIR / name
    port = free_port()
    config = CONFIG.format(
        module=MODULE,
        prefix=prefix,
        log=LOG_DIR / f"{name}.log",
        nofile=min(connections + 1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        # Connection slots, not fds: with fewer than ~1.1 per subscriber nginx reported
        # "worker_connections are not enough" and refused the last few hundred upgrades.
        slots=2 * connections + 1024,
        host=HOST,
        port=port,
    )
    return NchanServer(await launch(binary, prefix, config, port, "/ready", f"{name}.log"))
