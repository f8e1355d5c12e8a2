"""Each dependency in /healthz and /metrics: an Asterisk server (a fake AMI over loopback)
up, dropping events of no PBX, then down; a registered dependency that hangs or fails."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.asterisk_helpers import PBX
from tests.conftest import Tenants, create_tenants
from tests.fakes.ami_server import FakeAmi
from tests.live import make_settings, running
from tests.metrics_helpers import scrape_until
from tests.test_asterisk_server import write_toml

FAST = {"metrics_interval": 0.05, "metrics_queue_interval": 0.05}


async def healthz(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def asterisk_entries(health: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in health["dependencies"] if item["name"] == "asterisk"]


async def test_an_asterisk_server_up_dropping_and_down(tmp_path: Path) -> None:
    fake = await FakeAmi().start()
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    toml = write_toml(tmp_path / "asterisk.toml", fake.port, monitor, tmp_path / "Master.csv")
    tenants = Tenants()
    settings = make_settings(tmp_path / "data", backend="asterisk", asterisk_config=toml, **FAST)
    try:
        async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
            backend: Any = server.runtime.backends[0]
            assert await backend.wait_connected(3.0)
            up = await scrape_until(
                server.url,
                lambda m: (
                    m.value("cloudpbx_ami_up", server="lab") == 1
                    and m.value("cloudpbx_ami_ping_rtt_seconds", server="lab") is not None
                ),
            )
            rtt = up.value("cloudpbx_ami_ping_rtt_seconds", server="lab")
            assert rtt is not None and 0 < rtt < 5
            assert up.value("cloudpbx_ami_connects_total", server="lab") == 1
            assert asterisk_entries(await healthz(server.url)) == [
                {"name": "asterisk", "server": "lab", "status": "ok", "state": "connected"}
            ]

            # A PBX this server has no rule for: its events are dropped, counted by name.
            await fake.replay("queue", speed=50, pbx="ZadnaCentrala")
            dropped = await scrape_until(
                server.url,
                lambda m: (
                    m.number(
                        "cloudpbx_ami_dropped_events_total", server="lab", event="QueueCallerJoin"
                    )
                    >= 1
                ),
            )
            assert "ZadnaCentrala" not in dropped.text and PBX not in dropped.text

            await fake.stop_listening()
            await scrape_until(server.url, lambda m: m.value("cloudpbx_ami_up", server="lab") == 0)
            health = await healthz(server.url)
            assert health["status"] == "degraded"
            [entry] = asterisk_entries(health)
            assert entry["status"] == "down" and entry["state"] != "connected"
            assert str(fake.port) not in str(health) and PBX not in str(health)
    finally:
        await fake.close()


class Engine:
    """A registered dependency (as the event engine registers itself), reachable or not."""

    name = "event_engine"

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    async def health(self) -> dict[str, Any]:
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        if self.behaviour == "fail":
            raise ConnectionRefusedError("127.0.0.1:4222")
        return {"status": "ok"}


async def test_registered_dependencies_are_shown_and_a_bad_one_degrades(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        dependencies = server.runtime.dependencies
        dependencies.append(Engine("ok"))
        health = await healthz(server.url)
        assert health["status"] == "ok"
        assert {"name": "event_engine", "status": "ok"} in health["dependencies"]
        for behaviour, error in (("fail", "ConnectionRefusedError"), ("hang", "no answer in time")):
            dependencies[:] = [Engine(behaviour)]
            health = await healthz(server.url)
            assert health["status"] == "degraded"
            assert {"name": "event_engine", "status": "down", "error": error} in health[
                "dependencies"
            ]
            assert "4222" not in str(health)


async def test_transcription_workers_that_cannot_run_are_an_error(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        transcription_engine="whisper",
        transcription_workers=1,
        whisper_model_dir=tmp_path / "no-such-model",
    )
    async with running(settings) as server:
        health = await healthz(server.url)
    [entry] = [item for item in health["dependencies"] if item["name"] == "transcription"]
    assert entry == {
        "name": "transcription",
        "engines": ["whisper"],
        "status": "error",
        "mode": "in-process",
        "workers": 0,
    }
    assert health["status"] == "degraded"
    assert "no-such-model" not in str(health)
