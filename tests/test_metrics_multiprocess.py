"""Two real `cloudpbx serve` processes writing to one PROMETHEUS_MULTIPROC_DIR: a scrape of
either adds both up, and a worker killed -9 leaves the live gauges but not the totals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.metrics_helpers import Scrape, scrape, scrape_until
from tests.test_ws_kill9 import free_port, wait_healthy

UNAUTHORISED_CDR = {"route": "/cdr", "method": "GET", "status": "4xx"}


def start_serve(data: Path, port: int, metrics_dir: Path) -> subprocess.Popen[bytes]:
    cloudpbx = Path(sys.executable).with_name("cloudpbx")
    return subprocess.Popen(
        [str(cloudpbx), "serve", "--port", str(port), "--data", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "CLOUDPBX_BACKEND": "none",
            "CLOUDPBX_TRANSCRIPTION_ENGINE": "none",
            "CLOUDPBX_METRICS_INTERVAL": "0.05",
        },
    )


async def unauthorised_cdr(port: int, times: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(times):
            assert (await client.get("/cdr")).status_code == 401


def cdr_refusals(found: Scrape) -> float:
    return found.number("cloudpbx_http_request_duration_seconds_count", **UNAUTHORISED_CDR)


async def test_two_processes_add_up_and_a_killed_one_leaves_the_gauges(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    ports = [free_port(), free_port()]
    servers = [
        start_serve(tmp_path / f"data{n}", port, metrics_dir) for n, port in enumerate(ports)
    ]
    try:
        for port in ports:
            await wait_healthy(port)
        await unauthorised_cdr(ports[0], 3)
        await unauthorised_cdr(ports[1], 2)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:  # either process answers for both
            both = await scrape_until(url, lambda m: m.value("cloudpbx_workers") == 2)
            assert cdr_refusals(both) == 5
            pids = both.label_values("cloudpbx_process_resident_memory_bytes", "pid")
            assert pids == {str(server.pid) for server in servers}

        servers[1].send_signal(signal.SIGKILL)
        servers[1].wait(10)
        alone = await scrape(urls[0])
        assert alone.value("cloudpbx_workers") == 1
        assert alone.label_values("cloudpbx_process_resident_memory_bytes", "pid") == {
            str(servers[0].pid)
        }
        assert cdr_refusals(alone) == 5  # the dead worker's requests still happened
    finally:
        for server in servers:
            if server.poll() is None:
                server.terminate()
                server.wait(15)
    assert all(server.returncode is not None for server in servers)
