"""The Asterisk backend against the fake AMI server: resync, tenancy, /dial, CDRs,
recordings, the Master.csv catch-up, health and stopping."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudpbx.adapters.asterisk.backend import AsteriskBackend
from cloudpbx.adapters.asterisk.config import AsteriskConfig, ConfigError, parse_config
from cloudpbx.adapters.asterisk.framing import AmiMessage
from cloudpbx.domain.states import Disposition
from tests.asterisk_helpers import (
    LAB_PBX,
    PBX,
    Sink,
    config,
    last_states,
    server,
    until,
)
from tests.fakes.ami_server import DATA, FakeAmi, FakeSession
from tests.test_ami_translate import EXPECTED


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    ami = await FakeAmi().start()
    try:
        yield ami
    finally:
        await ami.close()


class Running:
    def __init__(self, backend: AsteriskBackend, sink: Sink) -> None:
        self.backend = backend
        self.sink = sink

    @property
    def server(self) -> Any:
        return self.backend.servers[0]


async def run(cfg: AsteriskConfig, tmp_path: Path, *, ledger: bool = True) -> Running:
    sink = Sink(tmp_path / "recordings")
    backend = AsteriskBackend(cfg, state_dir=tmp_path / "state", ledger=sink if ledger else None)
    await backend.start(sink)
    assert await backend.wait_connected(3.0)
    await settle(backend)
    return Running(backend, sink)


async def settle(backend: AsteriskBackend) -> None:
    """Until every server's dispatcher has nothing left to do."""
    for _ in range(3):
        await asyncio.sleep(0.02)
        for srv in backend.servers:
            await until(lambda srv=srv: srv._queue.empty() and srv._carry is None)  # type: ignore[misc]
            await srv.wait_catch_up()


async def reconnect(fake: FakeAmi, running: Running) -> None:
    resyncs = running.server.resyncs
    fake.drop()
    await until(lambda: running.server.resyncs > resyncs)
    await settle(running.backend)


def conference_member(room: str, ext: str, counter: str, pbx: str = PBX) -> AmiMessage:
    return AmiMessage(
        [
            ("Event", "ConfbridgeList"),
            ("Conference", room),
            ("CallerIDNum", ext),
            ("CallerIDName", f"{pbx} {ext}"),
            ("Channel", f"PJSIP/{pbx}-{ext}-{counter}"),
            ("Admin", "No"),
            ("MarkedUser", "No"),
            ("Muted", "No"),
        ]
    )


def cm(ext: str, counter: str, action: str) -> tuple[str, dict[str, Any]]:
    return "cmember", {
        "channel": f"PJSIP/{PBX}-{ext}-{counter}",
        "action": action,
        "conference": "SesjaRady",
        "callerIDName": f"{PBX} {ext}",
        "callerIDNum": ext,
    }


# -- configuration -------------------------------------------------------------------------


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="servers"):
        parse_config({})
    with pytest.raises(ConfigError, match=r"servers\.0\.secret"):
        parse_config({"servers": [{"name": "a", "username": "api", "pbx": [{"name": "X"}]}]})
    with pytest.raises(ConfigError, match="one server only: X"):
        config(server(1, name="a", pbx=[{"name": "X"}]), server(2, name="b", pbx=[{"name": "X"}]))
    with pytest.raises(ConfigError, match="unknown time zone"):
        config(server(1, timezone="Mars/Olympus"))
    with pytest.raises(ConfigError, match="claimed by both"):
        config(server(1, pbx=[{"name": "A", "queues": ["Q"]}, {"name": "B", "queues": ["Q"]}]))
    with pytest.raises(ConfigError, match="Extra inputs"):
        config(server(1, secert="typo"))
    with pytest.raises(ConfigError, match="digits"):
        config(server(1), rating={"prefixes": {"+48": {"zone": "PL", "per_minute": 1}}})


def test_config_file(tmp_path: Path) -> None:
    from cloudpbx.adapters.asterisk.config import load_config

    path = tmp_path / "asterisk.toml"
    path.write_text(
        """
[[servers]]
name = "ast1"
username = "api"
secret = "apisecret"
timezone = "Europe/Warsaw"

[servers.cdr_csv]
path = "/var/log/asterisk/cdr-csv/Master.csv"

[[servers.pbx]]
name = "MojaCentrala"
queues = ["Kolejka1"]

[rating.prefixes]
"48" = { zone = "Polska", per_minute = 20 }
"""
    )
    loaded = load_config(path)
    assert loaded.pbxes == ["MojaCentrala"]
    assert loaded.servers[0].events == "system,call,agent,cdr"
    assert loaded.rating.table()("48221234567", 61).cost == 40  # type: ignore[union-attr]
    path.write_text("[[servers]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "missing.toml")


# -- resync ----------------------------------------------------------------------------------


async def test_first_connect_publishes_the_state_once(fake: FakeAmi, tmp_path: Path) -> None:
    running = await run(config(server(fake.port)), tmp_path)
    try:
        items = running.sink.items(PBX)
        expected = [item for batch in EXPECTED["initial_state"] for item in batch]
        assert sorted(map(repr, items)) == sorted(map(repr, expected))
        # Held until the resync was complete: one batch (one message) per phone.
        assert len(running.sink.batches) == 6
        sent = [a.value("Action") for a in fake.actions]
        assert sent == [
            "Login",
            "CoreShowChannels",
            "DeviceStateList",
            "ExtensionStateList",
            "QueueStatus",
            "ConfbridgeListRooms",
        ]
        assert running.backend.health()["status"] == "ok"
    finally:
        await running.backend.stop()


async def test_reconnect_publishes_only_the_differences(fake: FakeAmi, tmp_path: Path) -> None:
    fake.rooms = {
        "SesjaRady": [
            conference_member("SesjaRady", "101", "00000004"),
            conference_member("SesjaRady", "103", "00000005"),
        ]
    }
    running = await run(config(server(fake.port)), tmp_path)
    try:
        assert [i for i in running.sink.items() if i[0] == "cmember"] == [
            cm("101", "00000004", "add"),
            cm("103", "00000005", "add"),
        ]
        # Nothing changed: a reconnect publishes nothing at all.
        running.sink.clear()
        await reconnect(fake, running)
        assert running.sink.batches == []
        # While we were away: 103 unregistered, a caller waits in the queue, 103 left the room.
        fake.set_extension("103", 4)
        for msg in fake.listings["QueueStatus"]:
            if msg.event == "QueueParams":
                msg.headers[msg.headers.index(("Calls", "0"))] = ("Calls", "1")
        fake.rooms["SesjaRady"].pop()
        await reconnect(fake, running)
        assert sorted(map(repr, running.sink.items())) == sorted(
            map(
                repr,
                [
                    ("subscriber", {"peer": "MojaCentrala-103", "statusValue": 4}),
                    ("extstatus", {"exten": "103", "status": 4}),
                    ("queue", {"peer": "Kolejka1", "calls": "1"}),
                    cm("103", "00000005", "remove"),
                ],
            )
        )
        # The conference ended meanwhile: ConfbridgeListRooms says none.
        running.sink.clear()
        fake.rooms.clear()
        await reconnect(fake, running)
        assert running.sink.items() == [cm("101", "00000004", "remove")]
        assert running.server.resyncs == 4
    finally:
        await running.backend.stop()


async def test_a_call_in_progress_at_reconnect_keeps_its_party(
    fake: FakeAmi, tmp_path: Path
) -> None:
    running = await run(config(server(fake.port)), tmp_path)
    try:
        call = AmiMessage(
            [
                ("Event", "CoreShowChannel"),
                ("Channel", "PJSIP/MojaCentrala-101-0000002a"),
                ("ChannelState", "6"),
                ("ConnectedLineNum", "102"),
                ("ConnectedLineName", "MojaCentrala 102"),
                ("Exten", "102"),
                ("Uniqueid", "1795839000.42"),
            ]
        )
        fake.listings["CoreShowChannels"] = [call]
        fake.set_extension("101", 1)
        running.sink.clear()
        await reconnect(fake, running)
        assert running.sink.items() == [
            (
                "subscriber",
                {
                    "peer": "MojaCentrala-101",
                    "statusValue": 1,
                    "connectPeerNumber": "102",
                    "connectPeerName": "MojaCentrala 102",
                },
            ),
            ("extstatus", {"exten": "101", "status": 1}),
        ]
        # The call ended while we were away.
        fake.listings["CoreShowChannels"] = []
        fake.set_extension("101", 0)
        running.sink.clear()
        await reconnect(fake, running)
        assert running.sink.items() == [
            ("subscriber", {"peer": "MojaCentrala-101", "statusValue": 0}),
            ("extstatus", {"exten": "101", "status": 0}),
        ]
    finally:
        await running.backend.stop()


async def test_a_held_call_stays_held_across_a_reconnect(fake: FakeAmi, tmp_path: Path) -> None:
    """101 puts 102 on hold (live); the connection drops; the listings say the same, so
    nothing is published: 102 stays 16 (DeviceStateList carries ONHOLD), 101 stays 1."""

    def snapshot(ext: str, counter: str, other: str) -> list[tuple[str, str]]:
        return [
            ("Privilege", "call,all"),
            ("Channel", f"PJSIP/MojaCentrala-{ext}-{counter}"),
            ("ChannelState", "6"),
            ("ChannelStateDesc", "Up"),
            ("ConnectedLineNum", other),
            ("ConnectedLineName", f"MojaCentrala {other}"),
            ("Exten", "102"),
            ("Uniqueid", f"1795839000.{counter}"),
        ]

    def state(ext: str, text: str, status: int) -> list[AmiMessage]:
        return [
            AmiMessage(
                [
                    ("Event", "DeviceStateChange"),
                    ("Privilege", "call,all"),
                    ("Device", f"PJSIP/MojaCentrala-{ext}"),
                    ("State", text),
                ]
            ),
            AmiMessage(
                [
                    ("Event", "ExtensionStatus"),
                    ("Privilege", "call,all"),
                    ("Exten", ext),
                    ("Context", "MojaCentrala"),
                    ("Hint", f"PJSIP/MojaCentrala-{ext}"),
                    ("Status", str(status)),
                ]
            ),
        ]

    a, b = snapshot("101", "00000050", "102"), snapshot("102", "00000051", "101")
    running = await run(config(server(fake.port)), tmp_path)
    try:
        running.sink.clear()
        await fake.emit(
            [
                AmiMessage([("Event", "Newchannel"), *a]),
                AmiMessage([("Event", "Newchannel"), *b]),
                *state("101", "INUSE", 1),
                *state("102", "INUSE", 1),
                AmiMessage([("Event", "BridgeEnter"), ("BridgeUniqueid", "b1"), *a]),
                AmiMessage([("Event", "BridgeEnter"), ("BridgeUniqueid", "b1"), *b]),
            ]
        )
        await until(lambda: running.sink.states("MojaCentrala-102")[-1:] == [1])
        await fake.emit([AmiMessage([("Event", "Hold"), ("MusicClass", "default"), *a])])
        await fake.emit(state("102", "ONHOLD", 16))
        await until(lambda: running.sink.states("MojaCentrala-102")[-1:] == [16])
        assert running.sink.states("MojaCentrala-101") == [1]
        assert ("extstatus", {"exten": "102", "status": 16}) in running.sink.items()
        # The listings after a reconnect: both channels, 102 ONHOLD.
        fake.listings["CoreShowChannels"] = [
            AmiMessage([("Event", "CoreShowChannel"), *a, ("BridgeId", "b1")]),
            AmiMessage([("Event", "CoreShowChannel"), *b, ("BridgeId", "b1")]),
        ]
        fake.set_extension("101", 1)
        fake.set_extension("102", 16)
        running.sink.clear()
        await reconnect(fake, running)
        assert running.sink.batches == []
    finally:
        await running.backend.stop()


async def test_a_missing_module_does_not_break_the_resync(fake: FakeAmi, tmp_path: Path) -> None:
    del fake.listings["QueueStatus"]  # app_queue not loaded: `Invalid/unknown command`
    running = await run(config(server(fake.port)), tmp_path)
    try:
        assert running.backend.health()["status"] == "ok"
        assert not [i for i in running.sink.items() if i[0] in ("queue", "qmember")]
    finally:
        await running.backend.stop()


# -- live events and tenancy ---------------------------------------------------------------------


async def test_live_call_is_published_as_it_happens(fake: FakeAmi, tmp_path: Path) -> None:
    running = await run(config(server(fake.port)), tmp_path)
    try:
        running.sink.clear()
        await fake.replay("originate_filtered", speed=10)
        await settle(running.backend)
        sink = running.sink
        expected = [item for batch in EXPECTED["originate_filtered"] for item in batch]
        assert last_states(sink.items()) == last_states(expected)
        assert sink.states("MojaCentrala-101")[-3:] == [32, 1, 0]
        assert sink.states("MojaCentrala-102")[-2:] == [2, 0]
        assert all(pbx == PBX for pbx, _ in sink.batches)
    finally:
        await running.backend.stop()


async def test_events_go_to_their_own_tenant(tmp_path: Path) -> None:
    """Server one serves MojaCentrala and InnaCentrala, server two ObcaCentrala; a stranger
    (ZadnaCentrala) on server one is nobody's."""
    one, two = await FakeAmi().start(), await FakeAmi().start()
    inna = {"name": "InnaCentrala"}
    obca = {"name": "ObcaCentrala"}
    cfg = config(
        server(one.port, name="one", pbx=[dict(LAB_PBX), inna]),
        server(two.port, name="two", pbx=[obca]),
    )
    two.listings = {name: [] for name in two.listings}
    running = await run(cfg, tmp_path)
    try:
        running.sink.clear()
        for scenario in ("originate_filtered", "queue"):
            await asyncio.gather(
                one.replay(scenario, speed=20),
                one.replay(scenario, speed=20, pbx="InnaCentrala"),
                one.replay(scenario, speed=20, pbx="ZadnaCentrala"),
                two.replay(scenario, speed=20, pbx="ObcaCentrala"),
            )
        await settle(running.backend)
        sink = running.sink
        assert {pbx for pbx, _ in sink.batches} == {PBX, "InnaCentrala", "ObcaCentrala"}
        for pbx, batch in sink.batches:
            for _, payload in batch:
                names = {"MojaCentrala", "InnaCentrala", "ObcaCentrala", "ZadnaCentrala"}
                for other in names - {pbx}:
                    assert other not in repr(payload), (pbx, payload)
        assert {pbx for pbx, _ in sink.rows} == {PBX, "InnaCentrala", "ObcaCentrala"}
        assert len([r for p, r in sink.rows if p == "ObcaCentrala"]) == 2
        # Nothing was listed on server two: its phones were learned from live device states.
        assert running.backend.is_extension("ObcaCentrala", "101")
        assert not running.backend.is_extension("ObcaCentrala", "105")
        assert not running.backend.is_extension("ZadnaCentrala", "101")
        health = running.backend.health()
        assert [s["pbxes"] for s in health["servers"]] == [[PBX, "InnaCentrala"], ["ObcaCentrala"]]
        # ZadnaCentrala's events were dropped and counted, by AMI event name.
        dropped = health["servers"][0]["dropped"]
        assert dropped["DeviceStateChange"] >= 4 and dropped["Cdr"] == 2
        assert {"Newchannel", "ExtensionStatus", "QueueCallerJoin"} <= set(dropped)
        assert health["servers"][1]["dropped"] == {}
        assert health["dropped"] == sum(dropped.values())
    finally:
        await running.backend.stop()
        await one.close()
        await two.close()


# -- /dial -----------------------------------------------------------------------------------


async def test_originate_sends_what_asterisk_needs(
    fake: FakeAmi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "cloudpbx.adapters.asterisk")

    async def accept(session: FakeSession, action: AmiMessage) -> list[tuple[str, str]]:
        async def later() -> None:
            await asyncio.sleep(0.05)
            await session.event(
                AmiMessage(
                    [
                        ("Event", "OriginateResponse"),
                        ("Privilege", "call,all"),
                        ("ActionID", action.value("ActionID")),
                        ("Response", "Success"),
                        ("Channel", "PJSIP/MojaCentrala-101-00000000"),
                        ("Reason", "4"),
                        ("Uniqueid", "1795838538.0"),
                    ]
                )
            )

        asyncio.get_running_loop().create_task(later())
        return [("Response", "Success"), ("Message", "Originate successfully queued")]

    fake.on_originate = accept
    running = await run(config(server(fake.port)), tmp_path)
    backend = running.backend
    try:
        result = await backend.originate(PBX, "101", "102")
        assert result.accepted and result.message == "Originate successfully queued"
        (sent,) = fake.sent("Originate")
        assert result.reference == sent.value("ActionID")
        assert dict(sent.headers) | {"ActionID": "x"} == {
            "Action": "Originate",
            "ActionID": "x",
            "Channel": "PJSIP/MojaCentrala-101",
            "Context": "MojaCentrala",
            "Exten": "102",
            "Priority": "1",
            "CallerID": '"MojaCentrala 101" <101>',
            "Timeout": "30000",
            "Async": "true",
            "Variable": f"CLOUDPBX_DIAL={result.reference}",
        }
        await until(lambda: "answered" in caplog.text)
        assert f"({result.reference}): Success, reason 4 (answered)" in caplog.text
    finally:
        await backend.stop()


async def test_dial_shows_the_party_being_called_while_cpa_rings(
    fake: FakeAmi, tmp_path: Path
) -> None:
    """Asterisk echoes the Originate's CallerID (cpa itself) as the first leg's connected
    line; the phone is shown connected to cpb instead."""

    async def ring_cpa(session: FakeSession, action: AmiMessage) -> list[tuple[str, str]]:
        async def later() -> None:
            snapshot = [
                ("Channel", "PJSIP/MojaCentrala-101-00000040"),
                ("CallerIDNum", "101"),
                ("CallerIDName", "MojaCentrala 101"),
                ("ConnectedLineNum", "101"),
                ("ConnectedLineName", "MojaCentrala 101"),
                ("Context", "MojaCentrala"),
                ("Exten", "s"),
                ("Uniqueid", "1795900000.64"),
            ]
            await session.event(
                AmiMessage([("Event", "Newchannel"), ("ChannelState", "0"), *snapshot])
            )
            await session.event(
                AmiMessage([("Event", "Newstate"), ("ChannelState", "5"), *snapshot])
            )
            await session.event(
                AmiMessage(
                    [
                        ("Event", "DeviceStateChange"),
                        ("Device", "PJSIP/MojaCentrala-101"),
                        ("State", "RINGING"),
                    ]
                )
            )

        asyncio.get_running_loop().create_task(later())
        return [("Response", "Success"), ("Message", "Originate successfully queued")]

    fake.on_originate = ring_cpa
    running = await run(config(server(fake.port)), tmp_path)
    try:
        running.sink.clear()
        assert (await running.backend.originate(PBX, "101", "102")).accepted
        await until(lambda: running.sink.states("MojaCentrala-101") == [8])
        assert running.sink.items() == [
            (
                "subscriber",
                {
                    "peer": "MojaCentrala-101",
                    "statusValue": 8,
                    "connectPeerNumber": "102",
                    "connectPeerName": "",
                },
            )
        ]
    finally:
        await running.backend.stop()


async def test_dial_with_cpa_unavailable_is_refused_at_once(fake: FakeAmi, tmp_path: Path) -> None:
    running = await run(config(server(fake.port)), tmp_path)
    try:
        # 105 is configured but not registered: Asterisk listed it UNAVAILABLE.
        assert running.backend.is_extension(PBX, "105")
        result = await running.backend.originate(PBX, "105", "102")
        assert not result.accepted
        assert (
            result.message
            == "105 is unavailable (Asterisk reports PJSIP/MojaCentrala-105 UNAVAILABLE)"
        )
        assert not fake.sent("Originate")
        # It registers: the next /dial goes to Asterisk.
        await fake.emit(
            [
                AmiMessage(
                    [
                        ("Event", "DeviceStateChange"),
                        ("Privilege", "call,all"),
                        ("Device", "PJSIP/MojaCentrala-105"),
                        ("State", "NOT_INUSE"),
                    ]
                )
            ]
        )
        await until(lambda: running.sink.states("MojaCentrala-105")[-1:] == [0])
        assert (await running.backend.originate(PBX, "105", "102")).accepted
        assert len(fake.sent("Originate")) == 1
    finally:
        await running.backend.stop()


async def test_originate_refusals(fake: FakeAmi, tmp_path: Path) -> None:
    async def refuse(session: FakeSession, action: AmiMessage) -> list[tuple[str, str]]:
        return [("Response", "Error"), ("Message", "Extension does not exist.")]

    running = await run(config(server(fake.port)), tmp_path)
    backend = running.backend
    try:
        # An unknown cpa never reaches Asterisk.
        assert not backend.is_extension(PBX, "999")
        refused = await backend.originate(PBX, "999", "102")
        assert not refused.accepted and "not an extension" in refused.message
        assert not fake.sent("Originate")
        # 105 is configured in Asterisk (listed, unregistered): a valid cpa.
        assert backend.is_extension(PBX, "105")
        # Response: Error.
        fake.on_originate = refuse
        result = await backend.originate(PBX, "101", "200")
        assert not result.accepted and result.message == "Extension does not exist."
        assert result.reference == fake.sent("Originate")[0].value("ActionID")
        # No answer in time.
        fake.ignore.add("Originate")
        late = await backend.originate(PBX, "101", "102")
        assert not late.accepted and "no answer within" in late.message
        # Another PBX, and Asterisk down.
        assert not (await backend.originate("Nieznana", "101", "102")).accepted
        await fake.stop_listening()
        await until(lambda: not running.server.connection.connected)
        down = await backend.originate(PBX, "101", "102")
        assert not down.accepted and "not connected" in down.message
    finally:
        await backend.stop()


async def test_configured_extensions_and_caller_id(fake: FakeAmi, tmp_path: Path) -> None:
    pbx = {
        **LAB_PBX,
        "extensions": ["101", "150"],
        "callerid": "{cpa} <{cpa}>",
        "account": "MojaCentrala",
        "originate_timeout": 12,
    }
    running = await run(config(server(fake.port, pbx=[pbx])), tmp_path)
    try:
        backend = running.backend
        assert backend.is_extension(PBX, "150") and not backend.is_extension(PBX, "102")
        assert (await backend.originate(PBX, "150", "0048221234567")).accepted
        (sent,) = fake.sent("Originate")
        assert sent.value("Channel") == "PJSIP/MojaCentrala-150"
        assert sent.value("CallerID") == "150 <150>"
        assert sent.value("Account") == "MojaCentrala" and sent.value("Timeout") == "12000"
    finally:
        await running.backend.stop()


# -- CDRs ------------------------------------------------------------------------------------


async def test_cdr_events_become_rows_rated_and_in_the_right_zone(
    fake: FakeAmi, tmp_path: Path
) -> None:
    rating = {"prefixes": {"48": {"zone": "Polska", "per_minute": 20}}}
    cfg = config(server(fake.port, timezone="Europe/Warsaw"), rating=rating)
    running = await run(cfg, tmp_path)
    try:
        await fake.replay("failed")
        outside = AmiMessage(
            [
                ("Event", "Cdr"),
                ("Privilege", "cdr,all"),
                ("AccountCode", PBX),
                ("Source", "101"),
                ("Destination", "48221234567"),
                ("CallerID", '"MojaCentrala 101" <101>'),
                ("Channel", "PJSIP/MojaCentrala-101-0000000c"),
                ("LastApplication", "Dial"),
                ("StartTime", "2026-11-28 05:00:00"),
                ("Duration", "70"),
                ("BillableSeconds", "61"),
                ("Disposition", "ANSWERED"),
                ("UniqueID", "1795838400.12"),
            ]
        )
        await fake.emit([outside])
        await until(lambda: len(running.sink.rows) == 5)
        rows = [r for _, r in running.sink.rows]
        assert [(r.uniqueid, r.disposition, r.lastapp) for r in rows[:4]] == [
            ("1795838310.8", Disposition.ANSWERED, "Dial"),
            ("1795838312.9", Disposition.NO_ANSWER, "Dial"),
            ("1795838312.9", Disposition.ANSWERED, "Hangup"),
            ("1795838324.11", Disposition.NO_ANSWER, "AppDial2"),
        ]
        assert all(r.cost is None and r.zone == "" for r in rows[:4])
        rated = rows[4]
        assert (rated.cost, rated.zone) == (40, "Polska")
        # Asterisk's clock said 05:00:00 in Europe/Warsaw: 04:00 UTC.
        assert rated.started_at.astimezone(UTC) == datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
        assert running.server.health()["cdrs"] == {"live": 5, "imported": 0}
    finally:
        await running.backend.stop()


def csv_rows(*scenarios: str) -> str:
    return "".join((DATA / f"{s}.cdr.csv").read_text() for s in scenarios)


async def test_a_busy_dial_gives_the_two_rows_asterisk_writes(
    fake: FakeAmi, tmp_path: Path
) -> None:
    """Decision (docs/asterisk.md): /cdr passes both rows of one uniqueid, as Master.csv."""
    running = await run(config(server(fake.port)), tmp_path)
    try:
        await fake.replay("busy", speed=20)
        await until(lambda: len(running.sink.rows) == 3)
        dial = [r for _, r in running.sink.rows if r.dst == "102"]
        assert [(r.disposition, r.lastapp, r.billsec) for r in dial] == [
            (Disposition.BUSY, "Dial", 0),
            (Disposition.ANSWERED, "Hangup", 0),
        ]
        assert dial[0].uniqueid == dial[1].uniqueid == "1796481019.5"
    finally:
        await running.backend.stop()


async def test_master_csv_catch_up_imports_each_row_once(fake: FakeAmi, tmp_path: Path) -> None:
    master = tmp_path / "cdr-csv" / "Master.csv"
    master.parent.mkdir()
    master.write_text(csv_rows("originate", "queue"))
    cfg = config(server(fake.port, cdr_csv={"path": str(master)}))
    running = await run(cfg, tmp_path)
    sink = running.sink
    try:
        # Rows written while we were not there: imported on the first connect.
        assert [r.uniqueid for _, r in sink.rows] == ["1795838273.0", "1795838285.2"]
        state = tmp_path / "state" / "lab.cdr-csv.json"
        assert state.exists()
        # A live Cdr, which cdr_csv also writes, and a row AMI never delivered.
        await fake.replay("originate_filtered")
        await until(lambda: len(sink.rows) == 3)
        with master.open("a") as out:
            out.write(csv_rows("originate_filtered", "failed"))
        await reconnect(fake, running)
        assert [r.uniqueid for _, r in sink.rows] == [
            "1795838273.0",
            "1795838285.2",
            "1795838538.0",  # live, not imported again
            "1795838310.8",
            "1795838312.9",
            "1795838312.9",
            "1795838324.11",
        ]
        assert running.server.health()["cdrs"] == {"live": 1, "imported": 6}
        # Nothing new: nothing imported.
        await reconnect(fake, running)
        assert len(sink.rows) == 7
    finally:
        await running.backend.stop()

    # A new process (state file lost): the store itself says what is there already.
    shutil.rmtree(tmp_path / "state")
    again = AsteriskBackend(cfg, state_dir=tmp_path / "state", ledger=sink)
    await again.start(sink)
    assert await again.wait_connected(3.0)
    await settle(again)
    assert len(sink.rows) == 7
    # Rotated: a new, shorter file is read from its start.
    os.replace(master, master.with_suffix(".csv.1"))
    master.write_text(csv_rows("conference"))
    await reconnect(fake, Running(again, sink))
    assert [r.uniqueid for _, r in sink.rows[7:]] == ["1795838299.4", "1795838299.7"]
    await again.stop()


async def test_catch_up_starting_at_the_end(fake: FakeAmi, tmp_path: Path) -> None:
    master = tmp_path / "Master.csv"
    master.write_text(csv_rows("originate"))
    cfg = config(server(fake.port, cdr_csv={"path": str(master), "start": "end"}))
    running = await run(cfg, tmp_path)
    try:
        assert running.sink.rows == []
        with master.open("a") as out:
            out.write(csv_rows("queue") + '"MojaCentrala","101","10')  # a row being written
        await reconnect(fake, running)
        assert [r.uniqueid for _, r in running.sink.rows] == ["1795838285.2"]
    finally:
        await running.backend.stop()


async def test_catch_up_also_runs_while_connected(fake: FakeAmi, tmp_path: Path) -> None:
    """A row AMI never delivered (a failed store, cdr_manager off) arrives without waiting
    for a reconnect."""
    master = tmp_path / "Master.csv"
    master.write_text("")
    cfg = config(server(fake.port, cdr_csv={"path": str(master), "interval": 0.1}))
    running = await run(cfg, tmp_path)
    try:
        with master.open("a") as out:
            out.write(csv_rows("queue"))
        await until(lambda: len(running.sink.rows) == 1)
        assert running.server.connection.connects == 1
    finally:
        await running.backend.stop()


# -- recordings ------------------------------------------------------------------------------


async def test_finished_recordings_are_linked_and_reported(fake: FakeAmi, tmp_path: Path) -> None:
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    (monitor / "1795838538.0.wav").write_bytes(b"RIFF" + bytes(996))
    (monitor / "1795838310.8.wav").write_bytes(b"RIFF" + bytes(40))  # header only
    cfg = config(server(fake.port, recordings={"dir": str(monitor), "settle": 0.05, "wait": 0.3}))
    running = await run(cfg, tmp_path)
    try:
        await fake.replay("originate_filtered")
        await fake.replay("failed")
        await until(lambda: len(running.sink.rows) == 5)
        collector = running.server.recordings
        await until(lambda: not collector._tasks)
        (pbx, info), *others = running.sink.recordings
        assert pbx == PBX and not others
        assert (info.uniqueid, info.src, info.dst) == ("1795838538.0", "102", "102")
        assert info.format == "wav"
        assert info.path == "1795838538.0.wav" and info.size == 1000
        placed = running.sink.recordings_dir(PBX) / info.path
        assert placed.read_bytes() == (monitor / "1795838538.0.wav").read_bytes()
        assert placed.stat().st_ino == (monitor / "1795838538.0.wav").stat().st_ino  # hard link
        assert info.started_at == datetime(2026, 11, 28, 4, 2, 18, tzinfo=UTC)
    finally:
        await running.backend.stop()


async def test_recording_waits_for_the_hangup(fake: FakeAmi, tmp_path: Path) -> None:
    """The Cdr can arrive before the Hangup; the file is complete only after it."""
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    cfg = config(
        server(fake.port, recordings={"dir": str(monitor), "settle": 0.05, "mode": "copy"})
    )
    running = await run(cfg, tmp_path)
    snapshot = [
        ("Privilege", "call,all"),
        ("Channel", "PJSIP/MojaCentrala-103-00000002"),
        ("ChannelState", "6"),
        ("Uniqueid", "1795838285.2"),
    ]
    try:
        await fake.emit([AmiMessage([("Event", "Newchannel"), *snapshot])])
        await fake.emit([AmiMessage([("Event", "MixMonitorStart"), *snapshot])])
        path = monitor / "1795838285.2.wav"
        path.write_bytes(bytes(500))
        cdr = (DATA / "queue.txt").read_bytes().split(b"Event: Cdr\r\n", 1)[1].split(b"\r\n\r\n")[0]
        await fake.emit(b"Event: Cdr\r\n" + cdr + b"\r\n\r\n")
        await until(lambda: len(running.sink.rows) == 1)
        await asyncio.sleep(0.2)
        assert running.sink.recordings == []  # still recording
        path.write_bytes(bytes(800))
        await fake.emit([AmiMessage([("Event", "Hangup"), *snapshot])])
        await until(lambda: len(running.sink.recordings) == 1)
        info = running.sink.recordings[0][1]
        assert info.size == 800 and (info.src, info.dst) == ("103", "500")
    finally:
        await running.backend.stop()


# -- health and stopping ---------------------------------------------------------------------


async def test_health_follows_the_connection(fake: FakeAmi, tmp_path: Path) -> None:
    running = await run(config(server(fake.port)), tmp_path)
    backend = running.backend
    try:
        assert backend.health()["status"] == "ok"
        await fake.stop_listening()
        await until(lambda: backend.health()["status"] == "degraded")
        (info,) = backend.health()["servers"]
        assert info["state"] in ("disconnected", "connecting") and info["error"]
    finally:
        await backend.stop()
    assert backend.health()["servers"][0]["state"] == "stopped"


async def test_wrong_secret_shows_in_health(fake: FakeAmi, tmp_path: Path) -> None:
    sink = Sink(tmp_path)
    backend = AsteriskBackend(config(server(fake.port, secret="nope")))
    await backend.start(sink)
    try:
        await until(lambda: backend.health()["servers"][0]["state"] == "auth_failed")
        health = backend.health()
        assert health["status"] == "degraded"
        assert "Authentication failed" in health["servers"][0]["error"]
        assert not (await backend.originate(PBX, "101", "102")).accepted
    finally:
        await backend.stop()


async def test_nothing_is_delivered_after_stop(fake: FakeAmi, tmp_path: Path) -> None:
    running = await run(config(server(fake.port)), tmp_path)
    await running.backend.stop()
    assert fake.sent("Logoff")
    count = len(running.sink.batches)
    await fake.replay("originate_filtered")
    await asyncio.sleep(0.1)
    assert len(running.sink.batches) == count and len(running.sink.rows) == 0
    await running.backend.stop()  # twice is fine
