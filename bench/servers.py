"""Starting and stopping the servers under test, each in its own process."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.common import DATA_DIR, HOST, Child, spawn


class WsServer(Protocol):
    """What the WebSocket suites need of a server under test: cloudpbx, the plain
    `websockets` baseline (both `Server`) or nginx + nchan (bench/nchan.py)."""

    kind: str

    @property
    def pids(self) -> list[int]:
        """The processes whose CPU and memory are the server's."""
        ...

    def ws_url(self, pbx: str, key: str) -> str: ...

    async def control(
        self, method: str, route: str, within: float = 30.0, **params: Any
    ) -> dict[str, Any]: ...

    async def stats(self, pbx: str = "") -> dict[str, Any]: ...

    async def stop(self) -> None: ...


@dataclass
class Server:
    kind: str  # "cloudpbx" or "websockets"
    child: Child
    port: int

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def pids(self) -> list[int]:
        return [self.child.pid]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ws_url(self, pbx: str, key: str) -> str:
        return f"ws://{HOST}:{self.port}/ws/pbx_{pbx}?pbxkey={key}"

    async def control(
        self, method: str, route: str, within: float = 30.0, **params: Any
    ) -> dict[str, Any]:
        if self.kind == "websockets":
            method = "GET"  # the websockets library's HTTP side answers GET only
        async with httpx.AsyncClient(base_url=self.url, timeout=within) as client:
            response = await client.request(method, route, params=params)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    async def stats(self, pbx: str = "") -> dict[str, Any]:
        return await self.control("GET", "/_bench/stats", pbx=pbx)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.control("POST", "/_bench/shutdown", within=5)
        await self.child.stop(grace=15)


def cloudpbx_env(database: Path, loop: str) -> dict[str, str]:
    data_dir = DATA_DIR / "server-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    return {
        "CLOUDPBX_DATABASE_URL": f"sqlite:///{database}",
        "CLOUDPBX_DATA_DIR": str(data_dir),
        "CLOUDPBX_HOST": HOST,
        "CLOUDPBX_PORT": "0",
        "CLOUDPBX_BACKEND": "none",
        "CLOUDPBX_SMS_GATEWAY": "none",
        "CLOUDPBX_LOG_LEVEL": "warning",
        "BENCH_LOOP": loop,
    }


async def start_cloudpbx(
    name: str, database: Path, loop: str = "asyncio", env: dict[str, str] | None = None
) -> Server:
    """`env` adds or overrides variables (CLOUDPBX_* settings, BENCH_* knobs)."""
    child = await spawn(name, "bench.serve", env={**cloudpbx_env(database, loop), **(env or {})})
    ready = await child.read(within=60)
    return Server("cloudpbx", child, int(ready["port"]))


async def start_raw_websockets(name: str, loop: str = "asyncio") -> Server:
    child = await spawn(name, "bench.rawws", env={"BENCH_LOOP": loop})
    ready = await child.read(within=30)
    return Server("websockets", child, int(ready["port"]))
