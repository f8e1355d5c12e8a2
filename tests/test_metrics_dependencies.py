"""Each dependency in /healthz and /metrics: an Asterisk server (a fake AMI over loopback)
up, dropping events of no PBX, then down; a registered dependency that hangs or fails; a
PostgreSQL that goes silent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from tests.asterisk_helpers import PBX, until_async
from tests.conftest import Tenants, create_tenants
from tests.fakes.ami_server import FakeAmi
from tests.fakes.stalling_proxy import StallingProxy
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


async def test_a_database_that_goes_silent_is_a_quick_503(tmp_path: Path, pg_database: str) -> None:
    """PostgreSQL behind a relay that stalls (the network path went silent): /healthz
    answers 503 within its check timeout instead of hanging, and 200 once it flows again."""
    url = make_url(pg_database)
    proxy = await StallingProxy(url.host or "127.0.0.1", url.port or 5432).start()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port)
    settings = make_settings(
        tmp_path, database_url=through_proxy.render_as_string(hide_password=False)
    )
    try:
        async with running(settings) as server:
            assert (await healthz(server.url))["database"] == "ok"
            proxy.stall()
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                started = asyncio.get_running_loop().time()
                silent = await client.get("/healthz")
                waited = asyncio.get_running_loop().time() - started
            assert silent.status_code == 503
            assert silent.json()["database"] == "error: TimeoutError"
            assert {"name": "database", "status": "down"} in silent.json()["dependencies"]
            assert waited < 8  # the 2 s check timeout, not the client's 10 s
            proxy.resume()
            await until_async(lambda: healthy(server.url), seconds=10)
    finally:
        await proxy.close()


async def healthy(url: str) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return (await client.get("/healthz")).status_code == 200
