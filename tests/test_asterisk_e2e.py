"""End to end against the real Asterisk lab (tests/lab_fixtures.py): the real server with
`backend = "asterisk"`, real WebSocket and HTTP clients, real phones.

Needs root (the lab is a chroot); nothing is skipped. Each test leaves every phone idle
and every agent unpaused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from cloudpbx.lab import PHONES, Lab, PhoneError
from tests.asterisk_helpers import until_async
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running

PBX = "MojaCentrala"
DAYS = {
    "datestart": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
    "datestop": (datetime.now(UTC) + timedelta(days=1)).date().isoformat(),
}


def lab_server_toml(lab: Lab, ping_interval: float) -> str:
    """The `[[servers]]` table for the lab's AMI, pinged every `ping_interval` seconds."""
    host, port = lab.ami_address
    return f"""
[[servers]]
name = "lab"
host = "{host}"
port = {port}
username = "{lab.settings.ami_user}"
secret = "{lab.settings.ami_secret}"
timezone = "UTC"
ping_interval = {ping_interval}
ping_timeout = 2.0
reconnect_min = 0.2
reconnect_max = 1.0
"""


def write_toml(lab: Lab, path: Path) -> Path:
    path.write_text(
        f"""{lab_server_toml(lab, 2.0)}
[servers.recordings]
dir = "{lab.recordings_dir}"
settle = 0.3
wait = 5.0

[servers.cdr_csv]
path = "{lab.cdr_csv_dir / "Master.csv"}"
start = "end"

[[servers.pbx]]
name = "{PBX}"
queues = ["Kolejka1"]
conferences = ["SesjaRady"]
originate_timeout = 4
"""
    )
    return path


@dataclass
class Api:
    """A running server, a WebSocket client collecting every message, an HTTP client."""

    server: LiveServer
    tenants: Tenants
    client: httpx.AsyncClient
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def backend(self) -> Any:
        return self.server.runtime.backends[0]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m["text"][kind] for m in self.messages if kind in m["text"]]

    def states(self, ext: int) -> list[int]:
        peer = f"{PBX}-{ext}"
        return [e["statusValue"] for e in self.events("subscriber") if e["peer"] == peer]

    async def wait(self, predicate: Callable[[], object], seconds: float = 15.0) -> None:
        for _ in range(int(seconds / 0.05)):
            if predicate():
                return
            await asyncio.sleep(0.05)
        tail = [m["text"] for m in self.messages[-12:]]
        raise AssertionError(f"not within {seconds} s; last messages: {tail}")

    async def dial(self, cpa: str, cpb: str) -> httpx.Response:
        return await self.client.get("/dial", params={"cpa": cpa, "cpb": cpb})

    async def cdr(self) -> list[dict[str, Any]]:
        reply = await self.client.get("/cdr", params=DAYS)
        assert reply.status_code == 200
        rows: list[dict[str, Any]] = reply.json()
        return rows

    async def cdr_where(
        self, match: Callable[[dict[str, Any]], bool], count: int = 1, seconds: float = 15.0
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for _ in range(int(seconds / 0.1)):
            found = [r for r in await self.cdr() if match(r)]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"no such CDR within {seconds} s: {await self.cdr()}")


def idle_or_unseen(a: Api, ext: int) -> bool:
    """Idle, or never shown: a call attempt that rings, is answered and ends within a few
    milliseconds (a /dial to a busy or unregistered number) may fall into one AMI read,
    and a change that is over within one read is not published."""
    return a.states(ext)[-1:] in ([], [0])


async def _collect(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    with contextlib.suppress(Exception):
        async for raw in ws:
            into.append(json.loads(raw))


@contextlib.asynccontextmanager
async def api(lab: Lab, data: Path, tenants: Tenants, *, fresh: bool = True) -> AsyncIterator[Api]:
    toml = write_toml(lab, data.parent / f"{data.name}.toml")
    settings = make_settings(data, backend="asterisk", asterisk_config=toml)

    async def prepare(runtime: Any) -> None:
        if fresh:
            await create_tenants(runtime, tenants)

    async with running(settings, prepare=prepare) as server:
        assert await server.runtime.backends[0].wait_connected(10.0)
        # The first resync is published; stored and delivered it is only after the hub's
        # next group commit. Commit it now, so that the client joins after the PBX's
        # initial state and sees only what the test does.
        assert await server.runtime.hub.flush()
        url = f"{server.ws_url}/ws/pbx_{PBX}?pbxkey={tenants.a_key}"
        async with connect(url, proxy=None) as ws, server.client(tenants.a_key) as client:
            handle = Api(server, tenants, client)
            collector = asyncio.create_task(_collect(ws, handle.messages))
            try:
                yield handle
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector


async def phone(lab: Lab, ext: int, command: str, *args: str) -> None:
    """A phone command (baresip answers `ok: false` when there is nothing to hang up)."""
    with contextlib.suppress(PhoneError):
        await asyncio.to_thread(getattr(lab.phone(ext), command), *args)


async def ami(lab: Lab, action: str, **headers: str) -> dict[str, str]:
    def run() -> dict[str, str]:
        with lab.ami(events=False) as session:
            return dict(session.action(action, **headers))

    return await asyncio.to_thread(run)


async def all_idle(lab: Lab) -> None:
    """Hang up every phone and wait until Asterisk shows them idle again."""
    for ext in PHONES:
        await phone(lab, ext, "hangup")

    def idle() -> bool:
        with lab.ami(events=False) as session:
            states = session.extension_states()
        return all(states[str(e)].get("Status") == "0" for e in PHONES)

    deadline = time.monotonic() + 15
    while not await asyncio.to_thread(idle):
        assert time.monotonic() < deadline, "phones not idle again"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def clean(lab: Lab) -> AsyncIterator[None]:
    await all_idle(lab)
    try:
        yield
    finally:
        await all_idle(lab)


# -- the tests ---------------------------------------------------------------------------


async def test_register_and_unregister(lab: Lab, tmp_path: Path) -> None:
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a:
        try:
            await asyncio.to_thread(lab.stop_phone, 103)
            unavailable = {"exten": "103", "status": 4}
            await a.wait(lambda: a.states(103)[-1:] == [4])
            await a.wait(lambda: unavailable in a.events("extstatus"))
            # One event per message: the subscriber line, then the phone's extstatus.
            texts = [m["text"] for m in a.messages]
            first = texts.index({"subscriber": {"peer": "MojaCentrala-103", "statusValue": 4}})
            assert texts[first + 1] == {"extstatus": unavailable}
        finally:
            await asyncio.to_thread(lab.start_phone, 103)
        await a.wait(lambda: a.states(103)[-2:] == [4, 0])
        ids = [m["id"] for m in a.messages]
        assert ids == sorted(set(ids))


async def test_dial_rings_both_talks_and_leaves_cdr_and_recording(lab: Lab, tmp_path: Path) -> None:
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a:
        started = datetime.now(UTC).replace(microsecond=0)
        reply = await a.dial("101", "102")
        assert reply.status_code == 200 and reply.text == "OK"
        assert reply.headers["x-originate-id"].startswith("cloudpbx-dial-")
        # 101 rings (8), answers, dials 102 (32), talks (1); 102 is Busy while in a call.
        # Ringing and Connecting last milliseconds here (the phones answer at once): whether
        # each gets a message of its own depends on how the AMI reads fall, so only the
        # values shown are checked, not that every transient one was shown.
        await a.wait(lambda: a.states(101)[-1:] == [1] and a.states(102)[-1:] == [2])
        assert set(a.states(101)) <= {8, 32, 1} and set(a.states(102)) <= {8, 2}
        talking = next(
            e for e in reversed(a.events("subscriber")) if e["peer"] == "MojaCentrala-101"
        )
        assert talking["connectPeerNumber"] == "102"
        await asyncio.sleep(2.0)
        await phone(lab, 102, "hangup")
        await a.wait(lambda: a.states(101)[-1:] == [0] and a.states(102)[-1:] == [0])
        (row,) = await a.cdr_where(lambda r: r["dst"] == "102" and r["lastapp"] == "Dial")
        assert row["src"] == "101" and row["disposition"] == "ANSWERED"
        assert row["clid"] == '"MojaCentrala 101" <101>'
        assert row["channel"].startswith("PJSIP/MojaCentrala-101-")
        assert row["dstchannel"].startswith("PJSIP/MojaCentrala-102-")
        assert 1 <= row["billsec"] <= row["duration"] and row["cost"] == ""
        # calldate: Asterisk's start time (UTC here) in the PBX's zone.
        calldate = datetime.strptime(row["calldate"], "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=ZoneInfo("Europe/Warsaw")
        )
        assert timedelta(0) <= calldate - started <= timedelta(seconds=5)
        uniqueid = row["uniqueid"]
        listed: list[dict[str, Any]] = []

        async def recorded() -> bool:
            listing = (await a.client.get("/record", params=DAYS)).json()
            listed[:] = [r for r in listing if r["uniqueid"] == uniqueid]
            return bool(listed)

        await until_async(recorded, 10)
        assert listed[0]["format"] == "wav"
        download = await a.client.get(f"/record/{uniqueid}")
        assert download.status_code == 200 and download.headers["content-type"] == "audio/wav"
        with wave.open(BytesIO(download.content)) as audio:
            assert audio.getframerate() == 8000 and audio.getnframes() > 8000  # > 1 s


async def test_queue_with_a_paused_agent(lab: Lab, tmp_path: Path) -> None:
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a:
        try:
            await ami(
                lab,
                "QueuePause",
                Interface="PJSIP/MojaCentrala-101",
                Paused="true",
                Reason="Przerwa",
                Queue="Kolejka1",
            )
            await ami(
                lab, "QueuePause", Interface="PJSIP/MojaCentrala-102", Paused="true", Reason="Lunch"
            )

            def member(ext: int) -> dict[str, Any]:
                found = [e for e in a.events("qmember") if e["peer"] == f"{PBX}-{ext}"]
                return found[-1] if found else {}

            await a.wait(
                lambda: member(101).get("m_paused") == "1" and member(102).get("m_paused") == "1"
            )
            assert member(101)["m_paused"] == "1" and member(101)["m_reason"] == "Przerwa"
            assert member(102)["m_reason"] == "Lunch" and member(102)["m_name"] == "Agent 2"
            await phone(lab, 103, "dial", "500")
            await a.wait(lambda: {"peer": "Kolejka1", "calls": "1"} in a.events("queue"))
            await a.wait(lambda: a.states(103)[-1:] == [32])
            await ami(
                lab,
                "QueuePause",
                Interface="PJSIP/MojaCentrala-101",
                Paused="false",
                Queue="Kolejka1",
            )
            await a.wait(lambda: a.events("queue")[-1:] == [{"peer": "Kolejka1", "calls": "0"}])
            await a.wait(lambda: a.states(101)[-1:] == [1] and a.states(103)[-1:] == [1])
            assert member(101)["m_paused"] == "0"
            await asyncio.sleep(1.0)
            await phone(lab, 103, "hangup")
            await a.wait(lambda: a.states(101)[-1:] == [0] and a.states(103)[-1:] == [0])
            (row,) = await a.cdr_where(lambda r: r["dst"] == "500")
            assert row["src"] == "103" and row["lastapp"] == "Queue"
        finally:
            for ext in ("101", "102"):
                await ami(lab, "QueuePause", Interface=f"PJSIP/MojaCentrala-{ext}", Paused="false")
        await a.wait(lambda: member(102).get("m_paused") == "0")


async def test_conference_members_come_and_go(lab: Lab, tmp_path: Path) -> None:
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a:

        def members(action: str) -> list[str]:
            return [e["callerIDNum"] for e in a.events("cmember") if e["action"] == action]

        await phone(lab, 101, "dial", "600")
        await a.wait(lambda: members("add") == ["101"])
        await phone(lab, 103, "dial", "600")
        await a.wait(lambda: members("add") == ["101", "103"])
        added = a.events("cmember")
        assert added[0]["conference"] == "SesjaRady"
        assert added[0]["channel"].startswith("PJSIP/MojaCentrala-101-")
        assert added[0]["callerIDName"] == "MojaCentrala 101"
        await phone(lab, 101, "hangup")
        await a.wait(lambda: members("remove") == ["101"])
        await phone(lab, 103, "hangup")
        await a.wait(lambda: members("remove") == ["101", "103"])


async def test_busy_no_answer_unregistered_and_unknown(lab: Lab, tmp_path: Path) -> None:
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a:
        # Unknown cpa: refused before Asterisk.
        unknown = await a.dial("999", "102")
        assert unknown.status_code == 500 and unknown.text == "Action Error"

        # Busy: 102 is in a call (echo test); its phone takes one call at a time.
        await phone(lab, 102, "dial", "700")
        await a.wait(lambda: a.states(102)[-1:] == [2])
        assert (await a.dial("101", "102")).text == "OK"
        (busy,) = await a.cdr_where(lambda r: r["dst"] == "102" and r["disposition"] == "BUSY")
        assert busy["src"] == "101" and busy["lastapp"] == "Dial"
        await phone(lab, 102, "hangup")
        await a.wait(lambda: idle_or_unseen(a, 101) and a.states(102)[-1:] == [0])

        # Unregistered target: 101 answers, the Dial to 105 fails at once.
        assert (await a.dial("101", "105")).text == "OK"
        (unreg,) = await a.cdr_where(lambda r: r["dst"] == "105")
        assert (unreg["disposition"], unreg["billsec"], unreg["dstchannel"]) == ("ANSWERED", 0, "")
        await a.wait(lambda: idle_or_unseen(a, 101))

        # No answer: 104 rings for the originate timeout (4 s) and never answers.
        assert (await a.dial("104", "101")).text == "OK"
        await a.wait(lambda: 8 in a.states(104))
        (missed,) = await a.cdr_where(
            lambda r: (
                r["channel"].startswith("PJSIP/MojaCentrala-104-")
                and r["disposition"] == "NO ANSWER"
            )
        )
        assert missed["billsec"] == 0
        await a.wait(lambda: a.states(104)[-1:] == [0])


async def test_asterisk_restart_mid_call_loses_no_cdr(lab: Lab, tmp_path: Path) -> None:
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a:
        assert (await a.dial("101", "102")).text == "OK"
        await a.wait(lambda: a.states(101)[-1:] == [1] and a.states(102)[-1:] == [2])
        channel = next(
            e for e in reversed(a.events("subscriber")) if e["peer"] == "MojaCentrala-101"
        )
        assert channel["connectPeerNumber"] == "102"
        await asyncio.sleep(1.0)
        await asyncio.to_thread(lab.restart_asterisk)  # the call is cut by the shutdown
        server = a.backend.servers[0]
        await a.wait(lambda: server.connection.connects >= 2 and server.resyncs >= 2)
        # The resync published the difference: both phones idle again.
        await a.wait(lambda: a.states(101)[-1:] == [0] and a.states(102)[-1:] == [0])
        assert a.backend.health()["status"] == "ok"
        rows = await a.cdr_where(lambda r: r["dst"] == "102" and r["lastapp"] == "Dial")
        await server.wait_catch_up()
        await asyncio.sleep(0.5)
        again = [r for r in await a.cdr() if r["dst"] == "102" and r["lastapp"] == "Dial"]
        assert len(again) == len(rows) == 1  # once, whether it came live or from Master.csv


async def test_calls_while_the_api_is_down_are_imported(lab: Lab, tmp_path: Path) -> None:
    tenants = Tenants()
    data = tmp_path / "data"
    async with clean(lab):
        async with api(lab, data, tenants) as a:
            assert await a.cdr() == []
        # The API is down: a call between two phones.
        await phone(lab, 101, "dial", "103")
        deadline = time.monotonic() + 10
        while True:
            events = await asyncio.to_thread(lab.phone(103).drain, 0.2)
            if any(e.get("type") == "CALL_ESTABLISHED" for e in events):
                break
            assert time.monotonic() < deadline, "103 never answered"
        await asyncio.sleep(1.5)
        await phone(lab, 101, "hangup")
        await all_idle(lab)
        async with api(lab, data, tenants, fresh=False) as a:
            (row,) = await a.cdr_where(lambda r: r["src"] == "101" and r["dst"] == "103")
            assert row["disposition"] == "ANSWERED" and row["billsec"] >= 1

            async def recorded() -> object:
                return (await a.client.get("/record", params=DAYS)).json()

            await until_async(recorded, 10)
            download = await a.client.get(f"/record/{row['uniqueid']}")
            assert download.status_code == 200 and len(download.content) > 44


# -- hold and busy: the WebSocket mirrors what Asterisk reports ----------------------------

DEVICE_STATES = {
    "UNKNOWN": 0,
    "NOT_INUSE": 0,
    "INUSE": 1,
    "BUSY": 2,
    "INVALID": 4,
    "UNAVAILABLE": 4,
    "RINGING": 8,
    "RINGINUSE": 8,
    "ONHOLD": 16,
}
"""`DeviceStateChange.State` -> `statusValue` (docs/websocket.md; CONTRACT.md "mirror")."""
CONNECTING = 32
"""The one value of ours: a device placing a call not answered yet (Asterisk has no word)."""


class AmiWatch:
    """A second AMI session (`Events: call`) read in a thread: what Asterisk reported."""

    def __init__(self, lab: Lab) -> None:
        self.events: list[dict[str, str]] = []
        self._session = lab.ami(events="call")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            got = self._session.drain(0.1)
            with self._lock:
                self.events += got

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._session.close()

    def seen(self, name: str, **fields: str) -> bool:
        with self._lock:
            return any(
                e.get("Event") == name
                and all(e.get(k, "").startswith(v) for k, v in fields.items())
                for e in self.events
            )

    def extension_statuses(self, ext: int) -> set[int]:
        with self._lock:
            return {
                int(e["Status"])
                for e in self.events
                if e.get("Event") == "ExtensionStatus" and e.get("Exten") == str(ext)
            }

    def device_states(self, ext: int) -> set[int]:
        with self._lock:
            return {
                DEVICE_STATES[e["State"]]
                for e in self.events
                if e.get("Event") == "DeviceStateChange" and e.get("Device") == f"PJSIP/{PBX}-{ext}"
            }


@contextlib.asynccontextmanager
async def watching(lab: Lab) -> AsyncIterator[AmiWatch]:
    watch = await asyncio.to_thread(AmiWatch, lab)
    try:
        yield watch
    finally:
        await asyncio.to_thread(watch.close)


async def asterisk_now(lab: Lab, *exts: int) -> tuple[dict[int, int], dict[int, int]]:
    """(ExtensionState status, device state as statusValue) of each, as Asterisk says now."""

    def run() -> tuple[dict[int, int], dict[int, int]]:
        with lab.ami(events=False) as session:
            extens = {
                e: int(session.action("ExtensionState", Exten=str(e), Context=PBX)["Status"])
                for e in exts
            }
            _, items = session.list_action("DeviceStateList")
        devices = {item.get("Device"): item.get("State", "") for item in items}
        return extens, {e: DEVICE_STATES[devices[f"PJSIP/{PBX}-{e}"]] for e in exts}

    return await asyncio.to_thread(run)


def last_extstatus(a: Api, ext: int) -> int | None:
    found = [e["status"] for e in a.events("extstatus") if e["exten"] == str(ext)]
    return found[-1] if found else None


async def mirrors_now(a: Api, lab: Lab, *exts: int) -> tuple[dict[int, int], dict[int, int]]:
    """Wait until the last WS events of each extension equal what Asterisk says now."""
    extens, devices = await asterisk_now(lab, *exts)
    await a.wait(
        lambda: all(
            last_extstatus(a, e) == extens[e] and a.states(e)[-1:] == [devices[e]] for e in exts
        )
    )
    return extens, devices


def assert_nothing_invented(a: Api, watch: AmiWatch, *exts: int) -> None:
    """Every value the WS showed is one Asterisk reported for that extension / device
    (plus idle at the start, and Connecting for the subscriber), and no phone was ever
    shown connected to itself."""
    for e in exts:
        shown = {ev["status"] for ev in a.events("extstatus") if ev["exten"] == str(e)}
        assert shown <= watch.extension_statuses(e) | {0}, (e, shown)
        allowed = watch.device_states(e) | {0, CONNECTING}
        assert set(a.states(e)) <= allowed, (e, a.states(e), allowed)
        for ev in a.events("subscriber"):
            if ev["peer"] == f"{PBX}-{e}":
                assert ev.get("connectPeerNumber") != str(e), ev


@pytest.mark.parametrize("holder", [101, 102])
async def test_hold_mirrors_asterisk(lab: Lab, tmp_path: Path, holder: int) -> None:
    """/dial 101→102, then `holder` presses hold (a re-INVITE with a=sendonly) and resumes.

    Asterisk marks the *held* device ONHOLD (16) — unless it is 102, whose
    `device_state_busy_at=1` keeps it Busy — and the phone that pressed hold stays In Use.
    """
    held = 102 if holder == 101 else 101
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a, watching(lab) as watch:
        assert (await a.dial("101", "102")).text == "OK"
        await a.wait(lambda: a.states(101)[-1:] == [1] and a.states(102)[-1:] == [2])
        await phone(lab, holder, "hold")
        await a.wait(lambda: watch.seen("Hold", Channel=f"PJSIP/{PBX}-{holder}-"))
        extens, devices = await mirrors_now(a, lab, 101, 102)
        if held == 101:  # Asterisk says ONHOLD for the held phone: so does the API
            assert extens[101] == devices[101] == 16
        else:  # 102 is held but busy_at=1 keeps it Busy; nobody is on hold for Asterisk
            assert (extens[102], devices[102]) == (2, 2)
        assert devices[holder] == (1 if holder == 101 else 2)  # pressing hold is no hold
        held_view = [ev for ev in a.events("subscriber") if ev["peer"] == f"{PBX}-{held}"]
        assert held_view[-1].get("connectPeerNumber") in (None, str(holder))

        await phone(lab, holder, "resume")  # baresip may say "not ok": it resumes
        await a.wait(lambda: watch.seen("Unhold", Channel=f"PJSIP/{PBX}-{holder}-"))
        extens, devices = await mirrors_now(a, lab, 101, 102)
        assert (extens, devices) == ({101: 1, 102: 2}, {101: 1, 102: 2})

        await phone(lab, 102, "hangup")
        await a.wait(lambda: a.states(101)[-1:] == [0] and a.states(102)[-1:] == [0])
        await a.wait(lambda: last_extstatus(a, 101) == 0 and last_extstatus(a, 102) == 0)
        assert_nothing_invented(a, watch, 101, 102)


async def test_busy_callee_never_shows_the_caller(lab: Lab, tmp_path: Path) -> None:
    """102 talks to the echo test; /dial 101→102: 101 answers, the Dial gets 486 Busy."""
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a, watching(lab) as watch:
        await phone(lab, 102, "dial", "700")
        await a.wait(lambda: a.states(102)[-1:] == [2] and last_extstatus(a, 102) == 2)
        assert (await a.dial("101", "102")).text == "OK"
        await a.wait(lambda: watch.seen("DialEnd", DialStatus="BUSY"))
        await a.wait(lambda: watch.seen("Hangup", Channel=f"PJSIP/{PBX}-101-"))
        # 101 rang, answered and hung up within milliseconds: when that all fell into one
        # read the translator publishes nothing for it (no change in the end), else it
        # ends Idle.
        await a.wait(
            lambda: a.states(101)[-1:] in ([], [0]) and last_extstatus(a, 101) in (None, 0)
        )
        extens, devices = await asterisk_now(lab, 101, 102)
        assert (extens, devices) == ({101: 0, 102: 2}, {101: 0, 102: 2})
        assert a.states(102)[-1] == 2
        for ev in a.events("subscriber"):
            if ev["peer"] == f"{PBX}-102":
                assert ev.get("connectPeerNumber") != "101", ev  # it never talked to 101
        await phone(lab, 102, "hangup")
        await a.wait(lambda: a.states(102)[-1:] == [0] and last_extstatus(a, 102) == 0)
        assert_nothing_invented(a, watch, 101, 102)


async def test_lost_registration_shows_when_asterisk_notices(lab: Lab, tmp_path: Path) -> None:
    """Phone 103 vanishes (SIGKILL: no un-REGISTER): the API shows it Unavailable when
    Asterisk's qualify does (~17 s), not before, and Idle once it registers again."""
    async with clean(lab), api(lab, tmp_path / "data", Tenants()) as a, watching(lab) as watch:
        try:
            await asyncio.to_thread(lab.kill_phone, 103)
            await a.wait(lambda: watch.seen("ExtensionStatus", Exten="103", Status="4"), 45)
            await a.wait(lambda: a.states(103)[-1:] == [4] and last_extstatus(a, 103) == 4)
        finally:
            await asyncio.to_thread(lab.start_phone, 103)
        await a.wait(lambda: a.states(103)[-1:] == [0] and last_extstatus(a, 103) == 0)
        assert a.states(103) == [4, 0]  # nothing before qualify noticed, nothing in between
        assert_nothing_invented(a, watch, 103)
