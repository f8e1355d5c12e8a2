"""`cloudpbx serve --workers N`: real processes on PostgreSQL. Both workers answer on one
port, a killed worker is replaced, SIGTERM stops them all (WebSockets closed with 1012),
and a configuration that cannot share state across processes is refused by name."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cloudpbx.runtime import build_runtime
from cloudpbx.settings import Settings
from tests.processes import (
    ENGINE_URL,
    alive,
    free_port,
    fresh_pg_database,
    healthz,
    serve,
    stop,
    wait_healthy,
)

PBX = "WorkerCentrala"
KEY = "WorkersTestKey1"


async def pids_answering(port: int, want: int, tries: int = 300) -> set[int]:
    """Pids seen on fresh connections, until `want` distinct ones answered (or `tries`)."""
    seen: set[int] = set()
    for _ in range(tries):
        body = await healthz(port)
        if body is not None:
            seen.add(body["pid"])
        if len(seen) >= want:
            break
        await asyncio.sleep(0.01)
    return seen


async def new_pids(port: int, known: set[int], seconds: float = 60) -> set[int]:
    """The first pids not in `known` that answer on `port`, waiting `seconds` at most."""
    for _ in range(int(seconds * 20)):
        body = await healthz(port)
        if body is not None and body["pid"] not in known:
            return {body["pid"]}
        await asyncio.sleep(0.05)
    return set()


async def seed(database_url: str, data: Path) -> None:
    runtime = build_runtime(Settings(database_url=database_url, data_dir=data))
    try:
        await runtime.migrate()
        await runtime.tenants.create(PBX, "Europe/Warsaw", None)
        await runtime.tenants.create_key(PBX, "tests", KEY)
    finally:
        await runtime.engine.dispose()


async def test_two_workers_share_a_port_restart_and_stop_cleanly(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    async with fresh_pg_database() as url:
        await seed(url, tmp_path)
        parent = serve(
            ["--workers", "2", "--port", str(port), "--data", str(tmp_path)],
            {
                "CLOUDPBX_DATABASE_URL": url,
                "CLOUDPBX_EVENT_ENGINE_URL": ENGINE_URL,
                "CLOUDPBX_BACKEND": "none",
            },
            log,
        )
        try:
            await wait_healthy(port, parent)
            first = await pids_answering(port, 2)
            assert len(first) == 2, f"only {first} answered on port {port}"
            assert parent.pid not in first

            victim = min(first)
            await stop_worker(victim)
            replaced = await new_pids(port, first)
            assert len(replaced) == 1, log.read_text()
            now = await pids_answering(port, 2)
            assert now == (first - {victim}) | replaced
            assert f"(pid {victim}) exited with SIGKILL; restarting it" in log.read_text()

            async with connect(f"ws://127.0.0.1:{port}/ws/pbx_{PBX}?pbxkey={KEY}") as ws:
                assert await stop(parent) == 0
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(10):
                        while True:
                            await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            workers = now
            for _ in range(100):
                if not any(alive(pid) for pid in workers):
                    break
                await asyncio.sleep(0.1)
            assert not any(alive(pid) for pid in workers)
            assert "all workers stopped" in log.read_text()
        finally:
            await stop(parent, signal.SIGKILL)


async def stop_worker(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("database", "engine", "missing", "not_missing"),
    [
        ("", "", ["PostgreSQL", "event_engine_url"], []),
        ("pg", "", ["event_engine_url"], ["PostgreSQL"]),
        # Refused by the settings themselves: an engine is for several processes.
        ("", ENGINE_URL, ["event_engine_url needs PostgreSQL"], ["Traceback"]),
    ],
)
def test_workers_without_postgresql_or_an_engine_are_refused_by_name(
    tmp_path: Path, database: str, engine: str, missing: list[str], not_missing: list[str]
) -> None:
    env = {"CLOUDPBX_EVENT_ENGINE_URL": engine}
    if database:
        env["CLOUDPBX_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    cloudpbx = Path(sys.executable).with_name("cloudpbx")
    result = subprocess.run(
        [str(cloudpbx), "serve", "--workers", "2", "--data", str(tmp_path), "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert "--workers 2 needs" in text or "invalid settings" in text
    for name in missing:
        assert name in text
    for name in not_missing:
        assert name not in text
    assert "Traceback" not in result.stderr
