"""The real server with `backend = "asterisk"` against the fake AMI server: WebSocket,
`/dial`, `/cdr` (live rows and the Master.csv catch-up through the real store), `/record`.
"""

from __future__ import annotations

import asyncio
import json
import wave
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from cloudpbx.adapters.asterisk.config import ConfigError
from cloudpbx.runtime import build_runtime
from cloudpbx.server import attach_backends
from tests.asterisk_helpers import PBX, fake_ami_server_toml, until, until_async
from tests.conftest import Tenants, create_tenants
from tests.fakes.ami_server import DATA, FakeAmi
from tests.live import LiveServer, make_settings, running

ALL_DAYS = {"datestart": "2026-11-27", "datestop": "2026-11-29"}


def write_toml(path: Path, port: int, monitor: Path, master: Path) -> Path:
    path.write_text(
        f"""{fake_ami_server_toml(port)}
[servers.recordings]
dir = "{monitor}"
settle = 0.05
wait = 0.5

[servers.cdr_csv]
path = "{master}"

[[servers.pbx]]
name = "{PBX}"
queues = ["Kolejka1"]
conferences = ["SesjaRady"]

[[servers.pbx]]
name = "BrakCentrala"               # configured, not in the database

[rating.prefixes]
"48" = {{ zone = "Polska", per_minute = 20 }}
"""
    )
    return path


def wav_bytes(seconds: float = 0.5) -> bytes:
    out = BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(bytes(int(16000 * seconds)))
    return out.getvalue()


async def messages_until(
    ws: ClientConnection, done: Any, seconds: float = 5.0
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while not done(got):
                got.append(json.loads(await ws.recv()))
    except TimeoutError:
        raise AssertionError(f"not there within {seconds} s; got {got}") from None
    return got


def subscriber_states(messages: list[dict[str, Any]], peer: str) -> list[int]:
    return [
        m["text"]["subscriber"]["statusValue"]
        for m in messages
        if m["text"].get("subscriber", {}).get("peer") == peer
    ]


async def cdr_rows(server: LiveServer, key: str) -> list[dict[str, Any]]:
    async with server.client(key) as client:
        reply = await client.get("/cdr", params=ALL_DAYS)
        assert reply.status_code == 200
        rows: list[dict[str, Any]] = reply.json()
        return rows


async def test_the_api_in_front_of_asterisk(tmp_path: Path) -> None:
    fake = await FakeAmi().start()
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    audio = wav_bytes()
    (monitor / "1795838538.0.wav").write_bytes(audio)
    master = tmp_path / "Master.csv"
    master.write_text(  # written while the API was down
        (DATA / "queue.cdr.csv").read_text()
        + (DATA / "queue.cdr.csv").read_text().replace("MojaCentrala", "BrakCentrala")
    )
    toml = write_toml(tmp_path / "asterisk.toml", fake.port, monitor, master)
    tenants = Tenants()
    settings = make_settings(tmp_path / "data", backend="asterisk", asterisk_config=toml)
    try:
        async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
            backend: Any = server.runtime.backends[0]
            assert await backend.wait_connected(3.0)
            assert backend.health()["status"] == "ok"
            url = f"{server.ws_url}/ws/pbx_{PBX}?pbxkey={tenants.a_key}"
            async with connect(url, proxy=None) as ws, server.client(tenants.a_key) as client:
                # register / unregister: subscriber and extstatus on the WebSocket.
                await fake.replay("register", speed=50)
                # (The start-up resync may arrive first: it is sent once stored.)
                got = await messages_until(
                    ws, lambda m: subscriber_states(m, "MojaCentrala-103")[-2:] == [4, 0]
                )
                texts = [m["text"] for m in got]
                first = texts.index({"subscriber": {"peer": "MojaCentrala-103", "statusValue": 4}})
                assert texts[first + 1] == {"extstatus": {"exten": "103", "status": 4}}

                # /dial: OK with the originate's id; an unknown cpa never reaches Asterisk.
                dial = await client.get("/dial", params={"cpa": "101", "cpb": "102"})
                assert dial.status_code == 200 and dial.text == "OK"
                (sent,) = fake.sent("Originate")
                assert dial.headers["x-originate-id"] == sent.value("ActionID")
                assert sent.value("CallerID") == '"MojaCentrala 101" <101>'
                unknown = await client.get("/dial", params={"cpa": "999", "cpb": "102"})
                assert unknown.status_code == 500 and unknown.text == "Action Error"
                # 105 exists but Asterisk says it is unavailable: refused before Asterisk.
                away = await client.get("/dial", params={"cpa": "105", "cpb": "102"})
                assert away.status_code == 500 and away.text == "Action Error"
                assert len(fake.sent("Originate")) == 1

                async def refuse(session: Any, action: Any) -> list[tuple[str, str]]:
                    return [("Response", "Error"), ("Message", "Extension does not exist.")]

                fake.on_originate = refuse
                refused = await client.get("/dial", params={"cpa": "101", "cpb": "200"})
                assert refused.status_code == 500 and refused.text == "Action Error"
                assert refused.headers["x-originate-id"]

                # The call itself: states on the WebSocket, the CDR, the recording.
                await fake.replay("originate_filtered", speed=20)
                got = await messages_until(
                    ws, lambda m: subscriber_states(m, "MojaCentrala-101")[-1:] == [0]
                )
                assert 32 in subscriber_states(got, "MojaCentrala-101")
                rows: list[dict[str, Any]] = []

                async def two_rows() -> bool:
                    rows[:] = await cdr_rows(server, tenants.a_key)
                    return len(rows) >= 2

                await until_async(two_rows)
                by_id = {r["uniqueid"]: r for r in rows}
                assert set(by_id) == {"1795838285.2", "1795838538.0"}  # imported + live
                live = by_id["1795838538.0"]
                # 04:02:18 in Asterisk's zone (UTC) is 05:02:18 in Warsaw.
                assert live["calldate"] == "2026-11-28 05:02:18"
                assert (live["src"], live["dst"], live["disposition"]) == ("102", "102", "ANSWERED")
                assert live["clid"] == '"Dial 102" <102>' and live["cost"] == ""

                async def recorded() -> object:
                    return (await client.get("/record", params=ALL_DAYS)).json()

                await until_async(recorded)
                (listed,) = (await client.get("/record", params=ALL_DAYS)).json()
                assert listed["uniqueid"] == "1795838538.0" and listed["format"] == "wav"
                download = await client.get("/record/1795838538.0")
                assert download.status_code == 200 and download.content == audio
                assert download.headers["content-type"] == "audio/wav"

            # A reconnect: nothing is imported twice.
            resyncs = backend.servers[0].resyncs
            fake.drop()
            await until(lambda: backend.servers[0].resyncs > resyncs)
            await backend.servers[0].wait_catch_up()
            assert len(await cdr_rows(server, tenants.a_key)) == 2

        # Down; a call happens; the position file is lost too. Up again: the new row is
        # imported, the others are recognised in the database.
        with master.open("a") as out:
            out.write((DATA / "originate_filtered.cdr.csv").read_text())
            out.write((DATA / "conference.cdr.csv").read_text())
        (tmp_path / "data" / "asterisk" / "lab.cdr-csv.json").unlink()
        settings = make_settings(tmp_path / "data", backend="asterisk", asterisk_config=toml)
        async with running(settings) as server:
            backend = server.runtime.backends[0]
            assert await backend.wait_connected(3.0)
            await backend.servers[0].wait_catch_up()
            rows = await cdr_rows(server, tenants.a_key)
            assert sorted(r["uniqueid"] for r in rows) == [
                "1795838285.2",
                "1795838299.4",
                "1795838299.7",
                "1795838538.0",
            ]
    finally:
        await fake.close()


async def test_asterisk_backend_needs_its_config(tmp_path: Path) -> None:
    runtime = build_runtime(make_settings(tmp_path, backend="asterisk"))
    try:
        with pytest.raises(ConfigError, match="asterisk_config"):
            await attach_backends(runtime)
        toml = tmp_path / "bad.toml"
        toml.write_text('[[servers]]\nname = "x"\n')
        runtime.settings.asterisk_config = toml
        with pytest.raises(ConfigError, match=r"servers\.0\.username"):
            await attach_backends(runtime)
    finally:
        await runtime.engine.dispose()


async def test_healthz_reports_the_backend_without_naming_tenants(tmp_path: Path) -> None:
    fake = await FakeAmi().start()
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    toml = write_toml(tmp_path / "asterisk.toml", fake.port, monitor, tmp_path / "Master.csv")
    tenants = Tenants()
    settings = make_settings(tmp_path / "data", backend="asterisk", asterisk_config=toml)
    try:
        async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
            backend: Any = server.runtime.backends[0]
            assert await backend.wait_connected(3.0)
            async with server.client() as client:
                healthy = await client.get("/healthz")
                assert healthy.status_code == 200
                assert healthy.json()["status"] == "ok"
                assert healthy.json()["backends"] == [
                    {"backend": "asterisk", "status": "ok", "dropped": 0}
                ]
                await fake.stop_listening()
                await until(lambda: backend.health()["status"] != "ok", seconds=5)
                degraded = await client.get("/healthz")
            # Stored data is still served: degraded, not unavailable.
            assert degraded.status_code == 200
            assert degraded.json()["status"] == "degraded"
            assert degraded.json()["backends"] == [
                {"backend": "asterisk", "status": "degraded", "dropped": 0}
            ]
            assert PBX not in degraded.text and str(fake.port) not in degraded.text
    finally:
        await fake.close()
