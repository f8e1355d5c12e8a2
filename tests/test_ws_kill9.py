"""kill -9 loses nothing anyone saw: a real `cloudpbx demo` process, killed mid-stream.

A client records every message it got from a busy simulated PBX; the server is killed
with SIGKILL; a new server over the same data folder replays from before the first of
them, says `X-Resume: complete`, and its replay holds every message the client saw,
byte for byte.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect

KEY = "KillNineKey1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_demo(data: Path, port: int, rate: str) -> subprocess.Popen[str]:
    cloudpbx = Path(sys.executable).with_name("cloudpbx")
    options = ["--port", str(port), "--data", str(data), "--key", KEY, "--seed", "9"]
    return subprocess.Popen(
        [str(cloudpbx), "demo", *options, "--rate", rate],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={
            **os.environ,
            "CLOUDPBX_SIMULATOR_BACKFILL_DAYS": "0",
            "CLOUDPBX_SIMULATOR_SPEED": "20",
            "CLOUDPBX_TRANSCRIPTION_ENGINE": "none",
        },
    )


async def wait_healthy(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for _ in range(600):
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the demo server did not come up in 60 s")


async def test_kill_9_loses_no_message_a_client_saw(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws/pbx_MojaCentrala?pbxkey={KEY}"
    seen: dict[int, str] = {}
    server = start_demo(data, port, rate="5")
    try:
        await wait_healthy(port)
        async with connect(url, proxy=None, open_timeout=10) as ws:
            while len(seen) < 60:
                raw = await asyncio.wait_for(ws.recv(), 30)
                assert isinstance(raw, str)
                seen[orjson.loads(raw)["id"]] = raw
            server.send_signal(signal.SIGKILL)  # mid-stream: messages keep coming until now
            server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    restarted = start_demo(data, port, rate="0")
    try:
        await wait_healthy(port)
        first = min(seen)
        async with connect(f"{url}&last_event_id={first - 1}", proxy=None) as ws:
            assert ws.response is not None
            assert ws.response.headers["x-resume"] == "complete"
            replayed: dict[int, str] = {}
            while max(replayed, default=0) < max(seen):
                raw = await asyncio.wait_for(ws.recv(), 10)
                assert isinstance(raw, str)
                replayed[orjson.loads(raw)["id"]] = raw
    finally:
        restarted.send_signal(signal.SIGINT)
        restarted.wait(15)
    assert {i: replayed.get(i) for i in seen} == seen
