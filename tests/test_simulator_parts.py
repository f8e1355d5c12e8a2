"""The simulator's pure parts: scenario engine, PBX state, rating, audio, dialogues."""

from __future__ import annotations

import random
import re
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloudpbx.adapters.simulator.audio import RATE, render, write_wav
from cloudpbx.adapters.simulator.cdr import CallLog, Channel, ChannelCounter, open_channel
from cloudpbx.adapters.simulator.conversation import write_dialogue
from cloudpbx.adapters.simulator.engine import Engine, Script
from cloudpbx.adapters.simulator.model import Destination, default_config
from cloudpbx.adapters.simulator.presence import PAUSE_REASONS
from cloudpbx.adapters.simulator.rating import zone_of
from cloudpbx.adapters.simulator.sim import CallKind, Emitted, Finished, Output, Sim, Speaker, Talk
from cloudpbx.adapters.simulator.traffic import office
from cloudpbx.domain.events import QueueCalls, QueueMember
from cloudpbx.domain.states import DeviceState, Disposition

ORIGIN = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def simulate(seed: int, hours: float, *, rate: float = 1 / 20) -> tuple[Sim, list[Output]]:
    """Run a PBX for `hours` of virtual time, then let every call and pause finish."""
    sim = Sim(default_config("MojaCentrala"), ChannelCounter(), random.Random(seed), origin=ORIGIN)
    scripts = office(sim, rate)
    sim.engine.run_until(hours * 3600)
    for script in scripts:
        script.close()
    while sim.engine.next_due() is not None:
        sim.engine.step()
    return sim, sim.drain()


def describe(out: Output) -> object:
    if isinstance(out, Emitted):
        return [e.payload() for e in out.events]
    return out.record


def test_same_seed_same_scenarios_different_seed_others() -> None:
    first = [describe(o) for o in simulate(21, 1)[1][:300]]
    second = [describe(o) for o in simulate(21, 1)[1][:300]]
    other = [describe(o) for o in simulate(22, 1)[1][:300]]
    assert len(first) == 300
    assert first == second
    assert first != other


def test_a_busy_day_ends_at_rest() -> None:
    sim, outputs = simulate(5, 8, rate=1 / 10)
    waiting: dict[str, int] = {}
    peaks: dict[str, int] = {}
    for out in outputs:
        for event in out.events if isinstance(out, Emitted) else ():
            if isinstance(event, QueueCalls):
                assert abs(event.calls - waiting.get(event.queue, 0)) == 1
                assert event.calls >= 0
                waiting[event.queue] = event.calls
                peaks[event.queue] = max(peaks.get(event.queue, 0), event.calls)
    assert waiting == {"Kolejka1": 0, "Kolejka2": 0}
    assert min(peaks.values()) >= 2
    state = sim.state
    assert all(p.device_state is DeviceState.IDLE and p.peer is None for p in state.phones.values())
    assert not state.room
    assert not any(m.paused for ms in state.memberships.values() for m in ms)

    rows = [o.record for o in outputs if isinstance(o, Finished)]
    answered_in_queue = [
        r for r in rows if r.lastapp == "Queue" and r.disposition is Disposition.ANSWERED
    ]
    taken = sum(m.calls_taken for ms in state.memberships.values() for m in ms)
    assert taken == len(answered_in_queue) > 10
    assert {r.disposition for r in rows} == set(Disposition)
    events = [e for o in outputs if isinstance(o, Emitted) for e in o.events]
    pause_changes = [e for e in events if isinstance(e, QueueMember) and e.reason is not None]
    assert {e.reason for e in pause_changes if e.paused} == set(PAUSE_REASONS)
    assert {e.reason for e in pause_changes if not e.paused} == {""}
    seen = {e.payload().get("statusValue") for e in events if e.event_type == "subscriber"}
    assert {0, 1, 2, 4, 8, 16, 32} <= seen
    actions = [e.payload()["action"] for e in events if e.event_type == "cmember"]
    assert actions.count("add") == actions.count("remove") > 0


def test_finished_calls_only_after_they_end() -> None:
    sim, outputs = simulate(8, 2)
    for out in outputs:
        if isinstance(out, Finished):
            record = out.record
            assert record.started_at >= ORIGIN
            assert out.talk is None or record.disposition is Disposition.ANSWERED
    assert sim.t > 2 * 3600


def test_engine_runs_in_time_order_and_in_scheduling_order_within_a_moment() -> None:
    engine = Engine()
    seen: list[tuple[float, str]] = []

    def script(name: str, delays: list[float]) -> Script:
        for delay in delays:
            seen.append((engine.now, name))
            yield delay
        seen.append((engine.now, name))

    engine.spawn(script("a", [2.0, 1.0]))
    engine.spawn(script("b", [1.0, 2.0]))
    engine.spawn(script("c", []), 3.0)
    engine.run_until(10.0)
    assert seen == [
        (0.0, "a"),
        (0.0, "b"),
        (1.0, "b"),
        (2.0, "a"),
        (3.0, "c"),
        (3.0, "b"),
        (3.0, "a"),
    ]
    assert engine.next_due() is None and engine.now == 10.0


def test_channels_and_uniqueids_look_like_asterisk() -> None:
    counter = ChannelCounter()
    moment = datetime(2026, 11, 28, 3, 57, 53, tzinfo=UTC)
    for _ in range(42):
        counter.take()
    channel = open_channel(counter, "MojaCentrala-101", moment)
    assert channel == Channel("SIP/MojaCentrala-101-0000002a", "1795838273.42")


def test_call_log_keeps_billsec_within_duration() -> None:
    log = CallLog(
        started_at=ORIGIN,
        begin=10.3,
        clid='"Anna Kowalska" <101>',
        src="101",
        dst="601234567",
        channel=Channel("SIP/MojaCentrala-101-00000001", "1795838273.1"),
        lastapp="Dial",
        rated=True,
        answer=10.9,
    )
    answered = log.finish(71.2, Disposition.ANSWERED)
    assert (answered.duration, answered.billsec) == (60, 60)
    assert (answered.cost, answered.zone) == (12, "Komórkowe")
    unanswered = log.finish(30.0, Disposition.NO_ANSWER)
    assert (unanswered.billsec, unanswered.cost) == (0, 0)


def test_rating_table() -> None:
    cases = {
        "601234567": "Komórkowe",
        "48601234567": "Komórkowe",
        "+48501234567": "Komórkowe",
        "226543210": "Stacjonarne lokalne",
        "126543210": "Stacjonarne krajowe",
        "800123456": "Bezpłatne",
        "00442071234567": "Międzynarodowe",
        "+4930123456": "Międzynarodowe",
    }
    for number, zone in cases.items():
        rated = zone_of(number)
        assert rated is not None and rated.name == zone, number
    assert zone_of("200") is None
    mobile = zone_of("601234567")
    assert mobile is not None
    assert [mobile.cost(s) for s in (0, 1, 60, 61)] == [0, 12, 12, 24]


def test_dialplan_routes_numbers() -> None:
    config = default_config("MojaCentrala")
    assert config.destination("101") is Destination.EXTENSION
    assert config.destination("500") is Destination.QUEUE
    assert config.destination("600") is Destination.CONFERENCE
    assert config.destination("601234567") is Destination.EXTERNAL
    assert config.destination("200") is Destination.UNKNOWN
    assert config.destination("12a") is Destination.INVALID
    assert config.location("101") == "SIP/MojaCentrala-101"


def talk() -> Talk:
    return Talk(
        CallKind.QUEUE,
        Speaker("Anna Kowalska", "101", True, external=False),
        Speaker("48601234567", "48601234567", False, external=True),
        "Kolejka2",
    )


def test_dialogue_is_polish_timed_and_reproducible() -> None:
    dialogue = write_dialogue(talk(), random.Random(3))
    assert dialogue == write_dialogue(talk(), random.Random(3))
    text = dialogue.transcript(120.0)
    lines = text.splitlines()
    assert len(lines) == len(dialogue.lines) >= 4
    assert all(re.match(r"^\[\d\d:\d\d\] (Anna Kowalska|Klient): \S", line) for line in lines)
    assert "Anna" in lines[0] and dialogue.summary
    short = dialogue.timeline(5.0)
    assert 0 < len(short) < len(dialogue.lines) and short[-1].end <= 5.0


def test_audio_is_a_playable_speech_like_wav(tmp_path: Path) -> None:
    dialogue = write_dialogue(talk(), random.Random(4))
    samples = render(dialogue.timeline(6.0), 6.0)
    path = tmp_path / "1795838273.0.wav"
    size = write_wav(path, samples)
    assert size == path.stat().st_size == 44 + 2 * 6 * RATE
    with wave.open(str(path)) as audio:
        assert audio.getparams()[:4] == (1, 2, 8000, 6 * RATE)
    loud = sum(1 for s in samples if abs(s) > 1000)
    assert 0.2 < loud / len(samples) < 0.9
    assert not list(tmp_path.glob("*.part"))


def test_history_scale_is_cheap() -> None:
    sim = Sim(
        default_config("MojaCentrala"),
        ChannelCounter(),
        random.Random(1),
        origin=datetime.now(UTC) - timedelta(days=1),
    )
    office(sim, 5.0)
    sim.engine.run_until(600.0)
    assert sum(isinstance(o, Finished) for o in sim.drain()) > 1000
