"""A real cloudpbx server on a loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.server import attach_backends, uvicorn_config
from cloudpbx.settings import Settings


@dataclass
class LiveServer:
    """A running server: its URLs and the runtime behind it (for seeding and checks)."""

    runtime: Runtime
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10, **kwargs)

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 15)


def make_settings(data_dir: Path, database_url: str = "", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "port": 0,
        "backend": "none",
        "sms_gateway": "simulator",
        "sms_simulator_step": 0.05,
        "simulator_backfill_days": 0,
        "log_level": "info",
        # The suites send many wrong keys from 127.0.0.1 on purpose; test_http_security.py
        # tests the throttle with its own small limit.
        "auth_fail_limit": 100_000,
    }
    values.update(overrides)
    return Settings(**values)


async def start_server(settings: Settings, *, prepare: Any = None) -> LiveServer:
    """Build, migrate, optionally prepare (seed tenants), attach backends, serve on a port."""
    runtime = build_runtime(settings)
    await runtime.migrate()
    if prepare is not None:
        await prepare(runtime)
    await attach_backends(runtime)
    server = uvicorn.Server(uvicorn_config(runtime))
    server.config.port = 0
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
        raise RuntimeError("server stopped during start")
    port = server.servers[0].sockets[0].getsockname()[1]
    return LiveServer(runtime, server, task, port)


@contextlib.asynccontextmanager
async def running(settings: Settings, *, prepare: Any = None) -> AsyncIterator[LiveServer]:
    live = await start_server(settings, prepare=prepare)
    try:
        yield live
    finally:
        await live.stop()
