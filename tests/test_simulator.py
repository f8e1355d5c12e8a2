"""The PBX simulator as the server sees it: a PbxBackend delivering to a sink.

A small in-memory sink stands in for services.ingest (a test double of the PbxSink port),
and the simulator runs at high speed for a fraction of a second per test.
"""

from __future__ import annotations

import asyncio
import re
import time
import wave
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cloudpbx.adapters.simulator import SimulatorBackend
from cloudpbx.adapters.simulator.backfill import RECENT_RECORDINGS
from cloudpbx.adapters.simulator.model import DIAL_DESK
from cloudpbx.domain.events import Event, ExtStatus, QueueCalls, QueueMember, Subscriber
from cloudpbx.domain.records import CdrRecord, RecordingInfo, TranscriptionRecord
from cloudpbx.domain.states import DeviceState, Disposition, MemberStatus

PBX = "MojaCentrala"
CLID = re.compile(r'^"[^"]+" <\d+>$')
UNIQUEID = re.compile(r"^\d{10}\.\d+$")
PHONE_CHANNEL = re.compile(r"^SIP/MojaCentrala-\d{3}-[0-9a-f]{8}$")
TRUNK_CHANNEL = re.compile(r"^SIP/MojaCentrala-trunk-[0-9a-f]{8}$")

# How a phone's state may change from one event to the next (one call per phone).
ALLOWED = {
    DeviceState.IDLE: {
        DeviceState.RINGING,
        DeviceState.CONNECTING,
        DeviceState.BUSY,
        DeviceState.UNAVAILABLE,
    },
    DeviceState.RINGING: {DeviceState.IDLE, DeviceState.IN_USE, DeviceState.CONNECTING},
    DeviceState.CONNECTING: {DeviceState.IDLE, DeviceState.IN_USE},
    DeviceState.IN_USE: {DeviceState.IDLE, DeviceState.ON_HOLD},
    DeviceState.ON_HOLD: {DeviceState.IN_USE},
    DeviceState.BUSY: {DeviceState.IDLE},
    DeviceState.UNAVAILABLE: {DeviceState.IDLE},
}


class MemorySink:
    """Keeps everything a backend delivers, in order.

    The first events of each PBX are the state it announces when it starts; they are kept
    apart in `announced`, so that `batches` holds what happened afterwards.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.announced: dict[str, list[Event]] = {}
        self.batches: list[list[Event]] = []
        self.cdr_rows: list[CdrRecord] = []
        self.recordings: list[RecordingInfo] = []
        self.transcriptions: list[TranscriptionRecord] = []
        self.order: list[str] = []
        self.pbxes: list[str] = []

    async def events(self, pbx: str, events: Sequence[Event]) -> None:
        if pbx not in self.announced:
            self.announced[pbx] = list(events)
            return
        self.batches.append(list(events))
        self.order.append("events")
        self.pbxes.append(pbx)

    async def cdr(self, pbx: str, record: CdrRecord) -> None:
        self.cdr_rows.append(record)
        self.order.append("cdr")

    async def cdrs(self, pbx: str, records: Sequence[CdrRecord]) -> None:
        self.cdr_rows.extend(records)
        self.order.append("cdrs")

    async def recording(self, pbx: str, info: RecordingInfo) -> None:
        self.recordings.append(info)
        self.order.append("recording")

    async def transcription(self, pbx: str, record: TranscriptionRecord) -> None:
        self.transcriptions.append(record)
        self.order.append("transcription")

    def recordings_dir(self, pbx: str) -> Path:
        folder = self.folder / pbx
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def phone_states(self) -> list[tuple[str, DeviceState]]:
        return [
            (e.peer.removeprefix(f"{PBX}-"), e.status)
            for batch in self.batches
            for e in batch
            if isinstance(e, Subscriber)
        ]


async def wait_for(condition: Callable[[], object], within: float = 2.5) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def sink(tmp_path: Path) -> MemorySink:
    return MemorySink(tmp_path)


async def run_for(backend: SimulatorBackend, sink: MemorySink, seconds: float) -> None:
    await backend.start(sink)
    try:
        await asyncio.sleep(seconds)
    finally:
        await backend.stop()


async def test_live_pbx_is_causal_and_asterisk_shaped(sink: MemorySink) -> None:
    backend = SimulatorBackend(
        [PBX], seed=7, rate=60, speed=300, recordings_per_minute=None, recording_seconds=2
    )
    await run_for(backend, sink, 1.5)

    assert len(sink.cdr_rows) > 20
    last: dict[str, DeviceState] = {}
    for number, state in sink.phone_states():
        before = last.get(number, DeviceState.IDLE)
        assert state in ALLOWED[before], f"{number}: {before!r} -> {state!r}"
        last[number] = state
    assert {DeviceState.RINGING, DeviceState.CONNECTING, DeviceState.IN_USE} <= {
        s for _, s in sink.phone_states()
    }

    # extstatus is Asterisk's ExtensionStatus: no Connecting (a caller's hint reads In Use),
    # and sent only when the extension's state changes (the first one: the state at start).
    extension: dict[str, int] = {}
    for batch in sink.batches:
        subscribers = [e for e in batch if isinstance(e, Subscriber)]
        statuses = [e for e in batch if isinstance(e, ExtStatus)]
        expected = []
        for subscriber in subscribers:
            exten = subscriber.peer.removeprefix(f"{PBX}-")
            status = DeviceState.IN_USE if subscriber.status == 32 else subscriber.status
            if extension.get(exten) != status:
                expected.append((exten, status))
            extension[exten] = status
        assert [(x.exten, x.status) for x in statuses] == expected
        for subscriber in subscribers:
            in_call = subscriber.status in (8, 32, 1, 16)
            assert (subscriber.connect_peer_number is not None) == in_call

    counts: dict[str, int] = {}
    for batch in sink.batches:
        for queue in (e for e in batch if isinstance(e, QueueCalls)):
            assert abs(queue.calls - counts.get(queue.queue, 0)) == 1
            assert queue.calls >= 0
            counts[queue.queue] = queue.calls

    dispositions = set()
    for row in sink.cdr_rows:
        dispositions.add(row.disposition)
        assert UNIQUEID.match(row.uniqueid)
        assert 0 <= row.billsec <= row.duration
        assert row.started_at.tzinfo is not None
        assert CLID.match(row.clid) and row.clid.endswith(f"<{row.src}>")
        internal_source = len(row.src) == 3
        assert (PHONE_CHANNEL if internal_source else TRUNK_CHANNEL).match(row.channel)
        if row.dstchannel:
            assert PHONE_CHANNEL.match(row.dstchannel) or TRUNK_CHANNEL.match(row.dstchannel)
        assert row.lastapp in {"Dial", "Queue", "ConfBridge"}
        if row.disposition is not Disposition.ANSWERED:
            assert row.billsec == 0
        if row.dstchannel.startswith(f"SIP/{PBX}-trunk") and internal_source:
            assert row.cost is not None and row.zone
            assert row.cost == 0 or row.disposition is Disposition.ANSWERED
        else:
            assert row.cost is None and row.zone == ""
    assert Disposition.ANSWERED in dispositions
    assert len(dispositions) >= 3

    answered = {r.uniqueid: r for r in sink.cdr_rows if r.disposition is Disposition.ANSWERED}
    assert len(sink.recordings) >= len(answered) - 1 > 0
    by_id = {t.uniqueid: t for t in sink.transcriptions}
    for info in sink.recordings:
        row = answered[info.uniqueid]
        assert (info.src, info.dst, info.started_at) == (row.src, row.dst, row.started_at)
        assert info.path == f"{info.uniqueid}.wav"
        path = sink.recordings_dir(PBX) / info.path
        assert path.stat().st_size == info.size
        with wave.open(str(path)) as audio:
            assert audio.getframerate() == 8000
            assert (audio.getnchannels(), audio.getsampwidth()) == (1, 2)
            assert audio.getnframes() > 0
    for record in sink.transcriptions[:-1]:
        assert record.content.startswith("[00:00]") and record.summary
    assert set(by_id) <= {info.uniqueid for info in sink.recordings}


async def test_same_seed_same_story(tmp_path: Path) -> None:
    runs = []
    for index, seed in enumerate((11, 11, 12)):
        sink = MemorySink(tmp_path / str(index))
        await run_for(SimulatorBackend([PBX], seed=seed, rate=50, speed=200), sink, 0.4)
        runs.append([[e.payload() for e in batch] for batch in sink.batches])
    same = min(len(runs[0]), len(runs[1]))
    assert same > 20
    assert runs[0][:same] == runs[1][:same]
    assert runs[0][:20] != runs[2][:20]


async def test_originate_rings_a_then_b_and_writes_the_cdr(sink: MemorySink) -> None:
    backend = SimulatorBackend([PBX], seed=3, rate=0, speed=1000)
    await backend.start(sink)
    try:
        result = await backend.originate(PBX, "102", "101")
        assert result.accepted and result.reference
        await wait_for(lambda: sink.cdr_rows and sink.transcriptions)
    finally:
        await backend.stop()

    states = [(n, int(s)) for n, s in sink.phone_states()]
    assert states[:5] == [("102", 8), ("102", 32), ("101", 8), ("101", 1), ("102", 1)]
    assert sorted(states[-2:]) == [("101", 0), ("102", 0)]
    assert {s for _, s in states[5:-2]} <= {16, 1}
    first = sink.batches[0]
    assert isinstance(first[0], Subscriber) and first[0].connect_peer_number == "101"
    assert first[0].connect_peer_name == "Anna Kowalska"
    assert [type(e) for e in first[:2]] == [Subscriber, ExtStatus]
    assert [(m.queue, m.status) for m in first[2:] if isinstance(m, QueueMember)] == [
        ("Kolejka1", MemberStatus.RINGING)
    ]

    (row,) = sink.cdr_rows
    assert (row.src, row.dst, row.lastapp) == ("102", "101", "Dial")
    assert row.disposition is Disposition.ANSWERED
    assert row.clid == '"Jan Nowak" <102>'
    assert PHONE_CHANNEL.match(row.channel) and row.channel.startswith(f"SIP/{PBX}-102-")
    assert row.dstchannel.startswith(f"SIP/{PBX}-101-")
    assert 0 < row.billsec <= row.duration
    assert sink.order.index("cdr") < sink.order.index("recording")
    assert sink.recordings[0].uniqueid == row.uniqueid


async def test_originate_outside_and_nowhere(sink: MemorySink) -> None:
    backend = SimulatorBackend([PBX], seed=5, rate=0, speed=1000)
    await backend.start(sink)
    try:
        assert (await backend.originate(PBX, "103", "601234567")).accepted
        assert (await backend.originate(PBX, "104", "200")).accepted
        await wait_for(lambda: len(sink.cdr_rows) == 2)
    finally:
        await backend.stop()
    rows = {row.dst: row for row in sink.cdr_rows}
    assert rows["601234567"].zone == "Komórkowe"
    assert rows["601234567"].cost is not None
    assert TRUNK_CHANNEL.match(rows["601234567"].dstchannel)
    assert rows["200"].disposition is Disposition.FAILED
    assert (rows["200"].cost, rows["200"].zone) == (None, "")


async def test_originate_refusals(sink: MemorySink) -> None:
    backend = SimulatorBackend([PBX], seed=1, rate=0, speed=1000)
    assert not (await backend.originate(PBX, "101", "102")).accepted  # not started
    await backend.start(sink)
    try:
        for pbx, cpa, cpb in (
            (PBX, "999", "102"),
            (PBX, "48601234567", "102"),
            (PBX, "101", "abc"),
            ("InnaCentrala", "101", "102"),
        ):
            result = await backend.originate(pbx, cpa, cpb)
            assert not result.accepted and result.message
        assert (await backend.originate(PBX, "105", "106")).accepted
        busy = await backend.originate(PBX, "105", "107")
        assert not busy.accepted and "busy" in busy.message
    finally:
        await backend.stop()
    assert backend.is_extension(PBX, "110") and not backend.is_extension(PBX, "111")
    assert backend.serves(PBX) and not backend.serves("InnaCentrala")


async def test_stop_is_prompt_and_final(sink: MemorySink) -> None:
    backend = SimulatorBackend([PBX], seed=2, rate=200, speed=500)
    for _ in range(3):
        await backend.start(sink)
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await backend.stop()
        assert time.monotonic() - began < 0.5
        delivered = len(sink.order)
        await asyncio.sleep(0.05)
        assert len(sink.order) == delivered
    assert delivered > 0
    uniqueids = [row.uniqueid for row in sink.cdr_rows]
    assert len(uniqueids) == len(set(uniqueids))


async def test_snapshot_describes_everything(sink: MemorySink) -> None:
    backend = SimulatorBackend([PBX, "InnaCentrala"], seed=4, rate=0)
    at_rest = backend.snapshot(PBX)
    subscribers = [e for e in at_rest if isinstance(e, Subscriber)]
    assert [s.peer for s in subscribers] == [f"{PBX}-{n}" for n in range(101, 111)]
    assert all(s.status is DeviceState.IDLE for s in subscribers)
    assert {(e.queue, e.calls) for e in at_rest if isinstance(e, QueueCalls)} == {
        ("Kolejka1", 0),
        ("Kolejka2", 0),
    }
    members = [e.payload() for e in at_rest if e.event_type == "qmember"]
    assert {m["m_mbshp"] for m in members} == {"static", "dynamic"}
    assert all(m["m_location"] == f"SIP/{m['peer']}" for m in members)
    await backend.start(sink)
    try:
        await backend.originate(PBX, "101", "102")
        await wait_for(lambda: len(sink.batches) >= 1)
        live = backend.snapshot(PBX)
        ringing = [e for e in live if isinstance(e, Subscriber) and e.status != 0]
        assert [e.peer for e in ringing] == [f"{PBX}-101"]
    finally:
        await backend.stop()


async def test_start_announces_the_state_at_rest_first(sink: MemorySink) -> None:
    """Like the Asterisk backend's resync: clients of a restarted PBX learn it is at rest,
    before anything else happens on it."""
    at_rest = SimulatorBackend([PBX, "InnaCentrala"], seed=4, rate=0)
    backend = SimulatorBackend([PBX, "InnaCentrala"], seed=4, rate=60, speed=300)
    await backend.start(sink)
    try:
        await wait_for(lambda: len(sink.batches) >= 5)
    finally:
        await backend.stop()
    assert sink.announced == {
        PBX: at_rest.snapshot(PBX),
        "InnaCentrala": at_rest.snapshot("InnaCentrala"),
    }
    assert len([e for e in sink.announced[PBX] if isinstance(e, Subscriber)]) == 10


async def test_backfill_fills_the_last_week(sink: MemorySink) -> None:
    now = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
    backend = SimulatorBackend([PBX], seed=9, clock=lambda: now)
    began = time.monotonic()
    count = await backend.backfill(sink, PBX)
    assert time.monotonic() - began < 3.0
    rows = sink.cdr_rows
    assert count == len(rows) > 700
    assert not sink.batches and "cdr" not in sink.order
    assert all(row.started_at.timestamp() + row.duration <= now.timestamp() + 1 for row in rows)
    days = {(now - row.started_at).days for row in rows}
    assert days == set(range(7))
    assert [r.started_at for r in rows] == sorted(r.started_at for r in rows)
    assert len({r.uniqueid for r in rows}) == len(rows)
    assert 0 < len(sink.recordings) <= 50 + RECENT_RECORDINGS
    assert len(sink.transcriptions) == len(sink.recordings)
    for info in sink.recordings:
        with wave.open(str(sink.recordings_dir(PBX) / info.path)) as audio:
            assert audio.getframerate() == 8000 and audio.getnframes() > 0

    again = MemorySink(sink.folder / "again")
    await SimulatorBackend([PBX], seed=9, clock=lambda: now).backfill(again, PBX)
    assert again.cdr_rows == rows


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 11, 27, 13, 40, tzinfo=UTC),  # a Friday afternoon in Warsaw
        datetime(2026, 12, 5, 14, 30, tzinfo=UTC),  # a Saturday: few calls
    ],
)
async def test_backfill_reaches_up_to_now_with_recordings_of_today(
    sink: MemorySink, now: datetime
) -> None:
    """The document's `/record` and `/transcription` (today) have rows on a first start."""
    zone = ZoneInfo("Europe/Warsaw")
    for seed in range(3):
        fresh = MemorySink(sink.folder / str(seed))
        await SimulatorBackend([PBX], seed=seed, clock=lambda: now).backfill(fresh, PBX)
        last = max(row.started_at for row in fresh.cdr_rows)
        assert now - timedelta(hours=2) < last < now
        today = now.astimezone(zone).date()
        recorded_today = {
            info.uniqueid
            for info in fresh.recordings
            if info.started_at.astimezone(zone).date() == today
        }
        assert len(recorded_today) >= RECENT_RECORDINGS
        assert recorded_today <= {t.uniqueid for t in fresh.transcriptions}
        answered = [row for row in fresh.cdr_rows if row.disposition is Disposition.ANSWERED]
        newest = {row.uniqueid for row in answered[-RECENT_RECORDINGS:]}
        assert newest <= {info.uniqueid for info in fresh.recordings}


async def test_the_desk_phone_is_left_to_dial(sink: MemorySink) -> None:
    """101 (the document's `/dial` example) is never taken by the office's own traffic:
    on a busy PBX, `/dial` from it is accepted time after time."""
    backend = SimulatorBackend([PBX], seed=12, rate=40, speed=200, backfill_days=2)
    history = MemorySink(sink.folder / "history")
    await backend.backfill(history, PBX)
    assert len(history.cdr_rows) > 100
    assert not [r for r in history.cdr_rows if DIAL_DESK in (r.src, r.dst)]

    def dialled() -> list[CdrRecord]:
        return [r for r in sink.cdr_rows if r.src == DIAL_DESK]

    await backend.start(sink)
    try:
        await wait_for(lambda: len(sink.cdr_rows) > 20, within=10)
        for count in range(1, 6):
            result = await backend.originate(PBX, DIAL_DESK, "200")
            assert result.accepted, result.message
            # A call to nowhere ends FAILED after a few virtual seconds; 101 is free again.
            await wait_for(lambda: len(dialled()) == count, within=10)  # noqa: B023
    finally:
        await backend.stop()
    desk = [s for n, s in sink.phone_states() if n == DIAL_DESK]
    assert desk == [DeviceState.RINGING, DeviceState.CONNECTING, DeviceState.IDLE] * 5
    assert [r for r in sink.cdr_rows if r.dst == DIAL_DESK] == []
    assert {(r.dst, r.disposition) for r in dialled()} == {("200", Disposition.FAILED)}
    others = {n for n, s in sink.phone_states() if s is not DeviceState.IDLE} - {DIAL_DESK}
    assert len(others) >= 5  # the office was busy all along


class BrokenEventsSink(MemorySink):
    """A sink whose event publishing fails (a hub in trouble)."""

    async def events(self, pbx: str, events: Sequence[Event]) -> None:
        raise RuntimeError("hub is down")


async def test_a_failing_sink_is_logged_once_and_the_pbx_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = BrokenEventsSink(tmp_path)
    backend = SimulatorBackend([PBX], seed=6, rate=0, speed=1000)
    await backend.start(sink)
    try:
        assert (await backend.originate(PBX, "101", "102")).accepted
        await wait_for(lambda: sink.cdr_rows)
    finally:
        await backend.stop()
    failures = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert sink.cdr_rows[0].disposition is Disposition.ANSWERED


async def test_each_pbx_lives_its_own_life(sink: MemorySink) -> None:
    other = "InnaCentrala"
    backend = SimulatorBackend([PBX, other], seed=8, rate=50, speed=300)
    await run_for(backend, sink, 0.4)
    assert set(sink.pbxes) == {PBX, other}
    for pbx, batch in zip(sink.pbxes, sink.batches, strict=True):
        for event in batch:
            if isinstance(event, Subscriber):
                assert event.peer.startswith(f"{pbx}-")
    assert backend.is_extension(other, "101")
