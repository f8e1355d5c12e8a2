"""The embedded default end to end: simulator → store → REST and WebSocket, and `cloudpbx demo`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import wave
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.conftest import Tenants, create_tenants
from tests.live import make_settings, running


def _states(messages: list[dict[str, Any]], peer: str) -> list[int]:
    return [
        m["text"]["subscriber"]["statusValue"]
        for m in messages
        if m["text"].get("subscriber", {}).get("peer") == peer
    ]


async def test_dial_on_the_simulator_runs_a_whole_call(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(
        tmp_path, backend="simulator", simulator_rate=0, simulator_speed=20, simulator_seed=1
    )
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        # From the start of the history: the PBX's state at rest, announced when the
        # simulator started, then the call.
        ws_url = f"{server.ws_url}/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
        async with (
            connect(f"{ws_url}&last_event_id=0") as ws,
            server.client(tenants.a_key) as client,
        ):
            dial = await client.get("/dial", params={"cpa": "101", "cpb": "102"})
            assert dial.status_code == 200 and dial.text == "OK"
            assert dial.headers["x-originate-id"]
            messages: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                while _states(messages, "MojaCentrala-101")[-2:] != [1, 0] or _states(
                    messages, "MojaCentrala-102"
                )[-2:] != [1, 0]:
                    messages.append(json.loads(await ws.recv()))
            assert _states(messages, "MojaCentrala-101") == [0, 8, 32, 1, 0]
            assert _states(messages, "MojaCentrala-102") == [0, 8, 1, 0]
            ids = [m["id"] for m in messages]
            assert ids == sorted(set(ids))

            rows: list[dict[str, Any]] = []
            async with asyncio.timeout(5):
                while not rows:
                    cdr = (await client.get("/cdr")).json()
                    rows = [r for r in cdr if r["src"] == "101" and r["dst"] == "102"]
                    await asyncio.sleep(0.05)
            (row,) = rows
            assert row["disposition"] == "ANSWERED" and row["lastapp"] == "Dial"
            assert 0 < row["billsec"] <= row["duration"]
            assert re.fullmatch(r"\d{10}\.\d+", row["uniqueid"])

            record = await client.get(f"/record/{row['uniqueid']}")
            assert record.status_code == 200
            assert record.headers["content-type"] == "audio/wav"
            with wave.open(BytesIO(record.content)) as audio:
                assert audio.getframerate() == 8000 and audio.getnframes() > 0
            text = (await client.get(f"/transcription/{row['uniqueid']}")).json()
            assert text["uniqueid"] == row["uniqueid"] and text["content"] and text["summary"]

            refused = await client.get("/dial", params={"cpa": "999", "cpb": "102"})
            assert refused.status_code == 500 and refused.text == "Action Error"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_demo_command_serves_a_week_of_history(tmp_path: Path) -> None:
    port = _free_port()
    cloudpbx = Path(sys.executable).with_name("cloudpbx")
    process = subprocess.Popen(  # noqa: ASYNC220 - the server must outlive this call
        [
            str(cloudpbx),
            "demo",
            "--port",
            str(port),
            "--data",
            str(tmp_path / "demo"),
            "--key",
            "MyExampleKey1",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # An engine that cannot run here: the demo must say so calmly and go on.
        env={**os.environ, "COLUMNS": "200", "CLOUDPBX_TRANSCRIPTION_ENGINE": "whisper"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": "Bearer MyExampleKey1"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=5) as client:
            for _ in range(300):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            week = {"datestart": (date.today() - timedelta(days=7)).isoformat()}
            cdr = await client.get("/cdr", params=week)
            assert cdr.status_code == 200 and len(cdr.json()) > 100
            assert len((await client.get("/record", params=week)).json()) > 10
            assert len((await client.get("/transcription", params=week)).json()) > 10
            unauthorised = await client.get("/cdr", headers={"Authorization": "Bearer nope"})
            assert unauthorised.status_code == 401
            await _the_documents_examples_work(client)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    assert "MyExampleKey1" in output
    assert f"ws://127.0.0.1:{port}/ws/pbx_MojaCentrala?pbxkey=MyExampleKey1" in output
    assert "transcripts: written by the simulated PBX" in output
    assert " ERROR " not in output and "Traceback" not in output


async def _the_documents_examples_work(client: httpx.AsyncClient) -> None:
    """README's lines on a fresh demo: today's lists have rows, `/dial?cpa=101&cpb=200`
    is accepted time after time (each call to 200 ends FAILED within seconds)."""
    cdr = (await client.get("/cdr")).json()
    if any(row["disposition"] == "ANSWERED" for row in cdr):  # none just after midnight
        assert (await client.get("/record")).json()
        assert (await client.get("/transcription")).json()
    around = {
        "datestart": (date.today() - timedelta(days=1)).isoformat(),
        "datestop": (date.today() + timedelta(days=1)).isoformat(),
    }
    for count in range(1, 4):
        dial = await client.get("/dial", params={"cpa": "101", "cpb": "200"})
        assert (dial.status_code, dial.text) == (200, "OK")
        dialled: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while len(dialled) < count:
                await asyncio.sleep(0.2)
                rows = (await client.get("/cdr", params=around)).json()
                dialled = [r for r in rows if (r["src"], r["dst"]) == ("101", "200")]
        assert dialled[-1]["disposition"] == "FAILED"
    same = await client.get("/dial", params={"cpa": "104", "cpb": "104"})
    assert same.status_code == 400 and same.json()["code"] == "same_number"


async def test_head_of_a_recording_gives_its_size_without_the_body(live) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from cloudpbx.domain.records import RecordingInfo

    server, tenants = live
    tenant = await server.runtime.tenants.require(tenants.a_name)
    folder = server.runtime.ingest.recordings_dir(tenants.a_name)
    (folder / "1764312345.9.wav").write_bytes(b"RIFF" + bytes(96))
    await server.runtime.calls.add_recording(
        tenant,
        RecordingInfo(
            "1764312345.9", datetime.now(UTC), "101", "102", "wav", "1764312345.9.wav", 100
        ),
    )
    async with server.client(tenants.a_key) as client:
        head = await client.head("/record/1764312345.9")
        missing = await client.head("/record/1764312345.8")
    assert head.status_code == 200
    assert head.headers["content-length"] == "100" and head.content == b""
    assert head.headers["content-type"] == "audio/wav"
    assert missing.status_code == 404
