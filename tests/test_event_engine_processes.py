"""Three real `cloudpbx serve` processes on one PostgreSQL database and one JetStream stream.

Each process runs the simulator on the same PBX, so all three publish at once. A client
on each process records its stream; one process is killed with SIGKILL mid-stream, and its
client resumes on another process from its last id. Over the range all three saw, the
streams are identical (ids, order, bytes), and the resumed one has no gap or repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cloudpbx.runtime import build_runtime
from tests.conftest import Tenants, create_tenants, scratch_pg_database
from tests.engine_support import NATS_URL, free_port, own_stream, read_until
from tests.live import make_settings


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of this test only: every process simulates every PBX in it."""
    yield from scratch_pg_database("cloudpbx_engine")


def serve(data: Path, database: str, stream: str, port: int) -> subprocess.Popen[bytes]:
    cloudpbx = Path(sys.executable).with_name("cloudpbx")
    env = {
        **os.environ,
        "CLOUDPBX_DATA_DIR": str(data),
        "CLOUDPBX_DATABASE_URL": database,
        "CLOUDPBX_PORT": str(port),
        "CLOUDPBX_EVENT_ENGINE_URL": NATS_URL,
        "CLOUDPBX_EVENT_ENGINE_STREAM": stream,
        "CLOUDPBX_BACKEND": "simulator",
        "CLOUDPBX_SIMULATOR_RATE": "3",
        "CLOUDPBX_SIMULATOR_SPEED": "20",
        "CLOUDPBX_SIMULATOR_BACKFILL_DAYS": "0",
        "CLOUDPBX_SMS_GATEWAY": "none",
        "CLOUDPBX_TRANSCRIPTION_ENGINE": "none",
        "CLOUDPBX_LOG_LEVEL": "warning",
    }
    return subprocess.Popen([str(cloudpbx), "serve"], env=env, stdout=subprocess.DEVNULL)


async def wait_healthy(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                health = (await client.get("/healthz")).json()
                assert health.get("event_engine") == "ok", health
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the server on {port} did not come up in 60 s")


@contextlib.asynccontextmanager
async def three_servers(
    tmp_path: Path, database: str, stream: str
) -> AsyncIterator[tuple[list[subprocess.Popen[bytes]], list[int]]]:
    ports = [free_port() for _ in range(3)]
    procs = [serve(tmp_path / f"p{i}", database, stream, port) for i, port in enumerate(ports)]
    try:
        await asyncio.gather(*(wait_healthy(port) for port in ports))
        yield procs, ports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def test_three_processes_kill_9_and_resume_elsewhere(
    tmp_path: Path, own_database: str
) -> None:
    tenants = Tenants()
    runtime = build_runtime(make_settings(tmp_path / "setup", own_database))
    await runtime.migrate()
    await create_tenants(runtime, tenants)
    await runtime.engine.dispose()
    async with (
        own_stream() as stream,
        three_servers(tmp_path, own_database, stream) as (
            procs,
            ports,
        ),
    ):

        def url(port: int, last_id: int | None = None) -> str:
            base = f"ws://127.0.0.1:{port}/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
            return base if last_id is None else f"{base}&last_event_id={last_id}"

        streams: list[dict[int, str]] = [{}, {}, {}]
        clients = [await connect(url(port), proxy=None) for port in ports]
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        read_until(ws, lambda s=seen: len(s) >= 40, seen)
                        for ws, seen in zip(clients, streams, strict=True)
                    )
                ),
                30,
            )
            procs[0].send_signal(signal.SIGKILL)  # mid-stream: the simulators keep going
            procs[0].wait(10)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(read_until(clients[0], lambda: False, streams[0]), 10)
            resume_from = next(reversed(streams[0]))
            clients[0] = await connect(url(ports[1], resume_from), proxy=None)
            assert clients[0].response is not None
            assert clients[0].response.headers["x-resume"] == "complete"
            target = max(next(reversed(s)) for s in streams)
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        read_until(ws, lambda s=seen: next(reversed(s)) > target + 20, seen)
                        for ws, seen in zip(clients, streams, strict=True)
                    )
                ),
                30,
            )
        finally:
            for ws in clients:
                await ws.close()
    low = max(min(s) for s in streams)
    high = min(max(s) for s in streams)
    common = [{i: raw for i, raw in s.items() if low <= i <= high} for s in streams]
    assert len(common[0]) >= 20
    assert common[1] == common[0]
    assert common[2] == common[0]
