"""The translator on every lab transcript, against events written out by hand.

How the expectations were made: reading each transcript (`tests/data/ami/*.jsonl`) and
applying the mapping of `cloudpbx.adapters.asterisk.translate` by hand. The harness feeds
what arrived in the same millisecond as one chunk and flushes after it, so each expected
batch is "the changes of that millisecond, per phone / queue / room". Comments name the
transcript lines (0-based line numbers of the .jsonl) each batch comes from.

Lab facts behind some values: `MojaCentrala-102` has `device_state_busy_at=1` (Busy, not
Ringing, while it rings, and Busy — not On Hold — while it is held); the Originate
`CallerID: Dial 102 <102>` becomes both the caller id of 101's leg and the connected line
102's phone shows; phone 104 never answers; 105 is not registered.

The harness also does what the backend does when it sends an `Originate` (the transcript's
own actions, `"dir": "out"`): it tells the translator which number cpa's leg is for
(`expect_originate`), and forgets it on `Response: Error` or `OriginateResponse`.
"""

from __future__ import annotations

import random
from itertools import groupby
from typing import Any

import pytest

from cloudpbx.adapters.asterisk.framing import AmiMessage, AmiParser
from cloudpbx.adapters.asterisk.tenancy import TenantMap, TenantRule
from cloudpbx.adapters.asterisk.translate import Batch, Translator
from cloudpbx.domain.events import group_into_texts
from tests.ami_data import ALL_SCENARIOS, received, rows

PBX = "MojaCentrala"
LAB = TenantRule(PBX, queues=frozenset({"Kolejka1"}), conferences=frozenset({"SesjaRady"}))

Item = tuple[str, dict[str, Any]]


def sub(ext: str, status: int, number: str | None = None, name: str | None = None) -> Item:
    payload: dict[str, Any] = {"peer": f"MojaCentrala-{ext}", "statusValue": status}
    if number is not None:
        payload["connectPeerNumber"] = number
        payload["connectPeerName"] = name
    return "subscriber", payload


def ext(exten: str, status: int) -> Item:
    return "extstatus", {"exten": exten, "status": status}


def qm(ext: str, status: str, ct: str, paused: str, name: str, reason: str | None = None) -> Item:
    payload: dict[str, Any] = {
        "peer": f"MojaCentrala-{ext}",
        "queue": "Kolejka1",
        "m_status": status,
        "m_ct": ct,
        "m_mbshp": "static",
        "m_paused": paused,
    }
    if reason is not None:
        payload["m_reason"] = reason
    payload["m_name"] = name
    payload["m_location"] = f"PJSIP/MojaCentrala-{ext}"
    return "qmember", payload


def queue(calls: str) -> Item:
    return "queue", {"peer": "Kolejka1", "calls": calls}


def cm(channel: str, action: str, number: str, name: str) -> Item:
    return "cmember", {
        "channel": channel,
        "action": action,
        "conference": "SesjaRady",
        "callerIDName": name,
        "callerIDNum": number,
    }


AGENT1, AGENT2 = "Agent 1", "Agent 2"
CONF101 = "PJSIP/MojaCentrala-101-00000004"
CONF103 = "PJSIP/MojaCentrala-103-00000005"

EXPECTED: dict[str, list[list[Item]]] = {
    # Events: off; the startup listings. ExtensionStateList (9-13) publishes each phone;
    # DeviceStateList (17-27) agrees and adds nothing (MWI:, Queue: devices are not
    # phones); QueueStatus (45-47) publishes the queue and its two agents.
    "initial_state": [
        [sub("104", 0), ext("104", 0)],
        [sub("105", 4), ext("105", 4)],
        [sub("101", 0), ext("101", 0)],
        [sub("102", 0), ext("102", 0)],
        [sub("103", 0), ext("103", 0)],
        [queue("0")],
        [qm("101", "1", "0", "0", AGENT1)],
        [qm("102", "1", "0", "0", AGENT2)],
    ],
    # 103's phone is killed; 17 s later qualify notices (ExtensionStatus 4 first, then
    # DeviceStateChange UNAVAILABLE, 8-13); it starts again and registers (22, 23).
    "register_lost": [
        [sub("103", 4), ext("103", 4)],
        [sub("103", 0), ext("103", 0)],
    ],
    # /dial 101 -> 102 (CallerID "MojaCentrala 101" <101>, echoed as 101's connected
    # line: 101 shows the party it calls, 102); 101 presses hold (78) and resumes (87).
    # Asterisk changes no state on hold here: 101 pressed it, and 102 has
    # device_state_busy_at=1, so it stays Busy (ExtensionState 2 at 83). Nothing is
    # published for the hold.
    "hold_holder": [
        [sub("101", 8, "102", ""), ext("101", 8), qm("101", "6", "0", "0", AGENT1)],  # 13-17
        # 18-60, one millisecond: 101 answered (Asterisk: InUse) and already dials 102
        # (32); 102's leg rings with 101 as its party.
        [
            sub("101", 32, "102", "MojaCentrala 102"),
            ext("101", 1),
            qm("101", "2", "0", "0", AGENT1),
        ],
        [
            sub("102", 2, "101", "MojaCentrala 101"),
            ext("102", 2),
            qm("102", "3", "0", "0", AGENT2),
        ],
        [sub("101", 1, "102", "MojaCentrala 102")],  # 61, 65 DialEnd ANSWER
        # 78 Hold, 87 Unhold: nothing.
        [sub("102", 0), ext("102", 0), qm("102", "1", "0", "0", AGENT2)],  # 127-131
        [sub("101", 0), ext("101", 0), qm("101", "1", "0", "0", AGENT1)],  # 132-136
    ],
    # The same call; 102 presses hold (74): Asterisk marks the held 101 ONHOLD — its
    # ExtensionStatus 16 (78), then QueueMemberStatus 8 and DeviceStateChange ONHOLD
    # 1 ms later (81, 82) — and back to 1 on Unhold (97-99).
    "hold_held": [
        [sub("101", 8, "102", ""), ext("101", 8), qm("101", "6", "0", "0", AGENT1)],  # 12-17
        [sub("101", 1, "102", ""), ext("101", 1), qm("101", "2", "0", "0", AGENT1)],  # 18-29
        # 48-60: 102's NewConnectedLine (48) comes before 101's DialBegin (50).
        [
            sub("102", 2, "101", "MojaCentrala 101"),
            ext("102", 2),
            qm("102", "3", "0", "0", AGENT2),
        ],
        [sub("101", 32, "102", "MojaCentrala 102")],
        [sub("101", 1, "102", "MojaCentrala 102")],  # 61, 65
        [sub("101", 16, "102", "MojaCentrala 102"), ext("101", 16)],  # 74, 78
        [qm("101", "8", "0", "0", AGENT1)],  # 81, 82 (the device state agrees)
        [sub("101", 1, "102", "MojaCentrala 102"), ext("101", 1), qm("101", "2", "0", "0", AGENT1)],
        [sub("102", 0), ext("102", 0), qm("102", "1", "0", "0", AGENT2)],  # 128-138
        [sub("101", 0), ext("101", 0), qm("101", "1", "0", "0", AGENT1)],  # 145-149
    ],
    # 102 talks to the echo test (700); /dial 101 -> 102 gets 486 Busy Here. 102's
    # rejected leg (61-73, never beyond Down) never makes 101 its party.
    "busy": [
        [sub("102", 32, "700", "")],  # 10 Newchannel in state Ring, no device state yet
        [sub("102", 2, "700", ""), ext("102", 2), qm("102", "3", "0", "0", AGENT2)],  # 15-19
        # 23-28: 101's leg is Down and its state unknown: nothing yet.
        [sub("101", 8, "102", ""), ext("101", 8), qm("101", "6", "0", "0", AGENT1)],  # 29-34
        [sub("101", 1, "102", ""), ext("101", 1), qm("101", "2", "0", "0", AGENT1)],  # 35-46
        # 61-65 102's new leg is Down: 102 keeps its echo call.
        # 67-70 DialBegin, NewConnectedLine 102, DialEnd BUSY in one millisecond.
        [sub("101", 1, "102", "MojaCentrala 102")],
        # 84 Hangup of 101's leg; its device state follows 1 ms later (86-88).
        [sub("101", 0), ext("101", 0), qm("101", "1", "0", "0", AGENT1)],
        [sub("102", 0), ext("102", 0), qm("102", "1", "0", "0", AGENT2)],  # 102-105
    ],
    # 103 un-REGISTERs (PeerStatus and ContactStatus are not used: the device state
    # says the same within the millisecond), then REGISTERs again.
    "register": [
        [sub("103", 4), ext("103", 4)],  # 8, 10
        [sub("103", 0), ext("103", 0)],  # 19 (20 agrees)
    ],
    # Originate 101 -> 102. 101's leg rings (8) with "Dial 102" as caller, is answered
    # (1), dials 102 (32) until 102 answers (1); 102 shows Busy while ringing. The
    # extension states are Asterisk's: 101 stays 1 (InUse) while it dials. 102's leg
    # has the connected line "Dial 102" <102> — its own number — so it never shows a
    # party (no phone is connected to itself).
    "originate": [
        [sub("101", 8, "102", "Dial 102"), ext("101", 8), qm("101", "6", "0", "0", AGENT1)],
        [sub("101", 1, "102", "Dial 102"), ext("101", 1), qm("101", "2", "0", "0", AGENT1)],
        [sub("101", 32, "102", "MojaCentrala 102")],  # 51 DialBegin, 52
        [sub("102", 2)],  # 53, 54 (the hint follows 1 ms later)
        [ext("102", 2), qm("102", "3", "0", "0", AGENT2)],  # 55, 60
        [sub("101", 1, "102", "MojaCentrala 102")],  # 66 DialEnd ANSWER
        [sub("102", 0), ext("102", 0), qm("102", "1", "0", "0", AGENT2)],  # 99-118
        [sub("101", 0), ext("101", 0), qm("101", "1", "0", "0", AGENT1)],
    ],
    # The same call with `Events: system,call,agent,cdr`; different millisecond cuts.
    "originate_filtered": [
        [sub("101", 8, "102", "Dial 102"), ext("101", 8), qm("101", "6", "0", "0", AGENT1)],
        [sub("101", 1, "102", "Dial 102"), ext("101", 1), qm("101", "2", "0", "0", AGENT1)],
        [sub("101", 32, "102", "Dial 102")],  # 24 DialBegin
        [sub("101", 32, "102", "MojaCentrala 102")],  # 25 NewConnectedLine
        [sub("102", 2), ext("102", 2), qm("102", "3", "0", "0", AGENT2)],  # 26-29
        [sub("101", 1, "102", "MojaCentrala 102")],  # 33 DialEnd
        [sub("102", 0), ext("102", 0), qm("102", "1", "0", "0", AGENT2)],  # 42-45
        [sub("101", 0), ext("101", 0), qm("101", "1", "0", "0", AGENT1)],  # 48-51
    ],
    # Agents paused; 103 calls the queue (500) and waits (32) until agent 101 answers.
    "queue": [
        [qm("101", "1", "0", "1", AGENT1, "Przerwa")],  # 8
        [qm("102", "1", "0", "1", AGENT2, "Lunch")],  # 13 (paused in all queues)
        [sub("103", 32, "500", "")],  # 19 Newchannel in state Ring, dialled 500
        [sub("103", 1, "500", ""), ext("103", 1)],  # 24-27 answered by the dialplan
        [queue("1")],  # 39 QueueCallerJoin
        [sub("103", 32, "500", "")],  # waiting in the queue (Asterisk: still InUse)
        # 43-46 QueueStatus repeats what is known: nothing.
        [qm("101", "1", "0", "0", AGENT1, "")],  # 56 unpaused
        [sub("101", 8, "103", "MojaCentrala 103"), ext("101", 8)],  # 62-66
        [qm("101", "6", "0", "0", AGENT1)],  # 69
        [sub("101", 1, "103", "MojaCentrala 103"), ext("101", 1)],  # 71, 79
        [sub("103", 32, "101", "MojaCentrala 101")],  # 72 DialEnd, 73 still queued
        [qm("101", "2", "0", "0", AGENT1)],  # 89, 95
        [queue("0")],  # 91 QueueCallerLeave (when the agent answers)
        [sub("103", 1, "101", "MojaCentrala 101")],
        # 106-108 QueueStatus again: nothing new.
        [sub("103", 0), ext("103", 0)],  # 141, 148, 151
        [sub("101", 0), ext("101", 0), qm("101", "1", "1", "0", AGENT1)],  # 149-154
        [qm("102", "1", "0", "0", AGENT2, "")],  # 158 unpaused
    ],
    # 101 and 103 dial 600 (ConfBridge SesjaRady) and leave one by one.
    "conference": [
        [sub("101", 32, "600", "")],  # 10 Ring
        [sub("101", 1, "600", ""), ext("101", 1), qm("101", "2", "1", "0", AGENT1)],
        [cm(CONF101, "add", "101", "MojaCentrala 101")],  # 28
        [sub("103", 32, "600", "")],  # 34
        [sub("103", 1, "600", ""), ext("103", 1)],  # 40-42
        [cm(CONF103, "add", "103", "MojaCentrala 103")],  # 50
        # 57-58 ConfbridgeList: both already known.
        [cm(CONF101, "remove", "101", "MojaCentrala 101")],  # 73
        [sub("101", 0), ext("101", 0), qm("101", "1", "1", "0", AGENT1)],  # 81-84
        [cm(CONF103, "remove", "103", "MojaCentrala 103")],  # 92
        # 102 Hangup of 103 one millisecond before its device state: no call-less
        # "In Use" in between.
        [sub("103", 0), ext("103", 0)],  # 103, 104
    ],
    "failed": [
        # e1: Originate 101 -> 105 (not registered): 101 rings, answers, the Dial fails
        # at once (CHANUNAVAIL, no DialBegin, so never 32) and 101 hangs up.
        [sub("101", 8, "105", "Dial 105"), ext("101", 8), qm("101", "6", "1", "0", AGENT1)],
        [sub("101", 1, "105", "Dial 105"), ext("101", 1), qm("101", "2", "1", "0", AGENT1)],
        [sub("101", 0), ext("101", 0)],  # 54, 56
        [qm("101", "1", "1", "0", AGENT1)],  # 58
        # e2: Originate 101 -> 104 (never answers, Dial timeout 8 s). The channel set up
        # on idle 101 (64-70) is no call yet.
        [sub("101", 8, "104", "Dial 104"), ext("101", 8), qm("101", "6", "1", "0", AGENT1)],
        [sub("101", 1, "104", "Dial 104"), ext("101", 1)],  # 76, 77
        [qm("101", "2", "1", "0", AGENT1)],  # 84
        [sub("101", 32, "104", "MojaCentrala 104")],  # 108, 111
        [sub("104", 8), ext("104", 8)],  # 109, 110: "Dial 104" <104> is itself
        [sub("101", 1, "104", "MojaCentrala 104")],  # 125 NOANSWER
        [sub("104", 0), ext("104", 0)],  # 136
        [sub("101", 0), ext("101", 0), qm("101", "1", "1", "0", AGENT1)],  # 138-144
        # e3, e4 (105 unregistered), e6 (no such exten), e7 (bad tech): no channels.
        # e5: Originate 104 alone (Exten 101), rings 6 s with no caller id, never
        # answered: its party is the number the /dial is for.
        [sub("104", 8, "101", ""), ext("104", 8)],  # 160, 161
        [sub("104", 0), ext("104", 0)],  # 172 Hangup, then 175, 176
    ],
}


def items(batches: list[Batch]) -> list[list[Item]]:
    assert all(pbx == PBX for pbx, _ in batches)
    return [[(e.event_type, e.payload()) for e in events] for _, events in batches]


Step = tuple[list[AmiMessage], bytes]
"""Actions we sent, then what Asterisk sent, in one millisecond."""


def steps(scenario: str) -> list[Step]:
    """The transcript cut where the receive time changes (one read from the socket per
    millisecond), each with the actions sent in that millisecond."""
    out: list[Step] = []
    for _, group in groupby(rows(scenario), key=lambda row: row["t"]):
        actions: list[AmiMessage] = []
        chunk = b""
        for row in group:
            raw = str(row["raw"]).encode("utf-8")
            if row["dir"] == "out":
                actions.extend(AmiParser().feed(raw))
            else:
                chunk += raw
        out.append((actions, chunk))
    return out


def run_steps_of(translator: Translator, scenario_steps: list[Step]) -> list[Batch]:
    """Feed and flush step by step, doing for each Originate what the backend does."""
    parser = AmiParser()
    originates: dict[str, tuple[str, str]] = {}
    out: list[Batch] = []
    for actions, chunk in scenario_steps:
        for action in actions:
            if action.value("Action").lower() == "originate":
                dial = (action.value("Channel"), action.value("Exten"))
                originates[action.value("ActionID")] = dial
                translator.expect_originate(*dial)
        for msg in parser.feed(chunk):
            dial_done = originates.get(msg.action_id or "")
            if dial_done is not None and (
                msg.event == "OriginateResponse" or msg.value("Response") == "Error"
            ):
                translator.cancel_originate(*dial_done)
            translator.feed(msg)
        out.extend(translator.flush())
    return out


def run_bursts(translator: Translator, chunks: list[bytes]) -> list[Batch]:
    return run_steps_of(translator, [([], chunk) for chunk in chunks])


def test_every_transcript_has_expectations() -> None:
    assert set(EXPECTED) == set(ALL_SCENARIOS)


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_transcript_translates_to_the_expected_events(scenario: str) -> None:
    batches = run_steps_of(Translator(TenantMap([LAB])), steps(scenario))
    assert items(batches) == EXPECTED[scenario]


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_each_batch_is_one_message(scenario: str) -> None:
    """A batch of a phone holds one event per type, so it travels as one `text`."""
    for _, events in run_steps_of(Translator(TenantMap([LAB])), steps(scenario)):
        assert len(group_into_texts(events)) == 1


def last_states(batches: list[Batch]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last payload per subject: what a client shows once everything arrived."""
    state: dict[tuple[str, str], dict[str, Any]] = {}
    for _, events in batches:
        for event in events:
            payload = event.payload()
            subject = payload.get("peer") or payload.get("exten") or payload.get("channel")
            key = (event.event_type, f"{subject}/{payload.get('queue', '')}")
            state[key] = payload
    return state


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_final_state_does_not_depend_on_how_often_we_flush(scenario: str) -> None:
    data = received(scenario)
    expected = last_states(run_steps_of(Translator(TenantMap([LAB])), steps(scenario)))
    rng = random.Random(scenario)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert last_states(run_bursts(Translator(TenantMap([LAB])), chunks)) == expected
    one_by_one = Translator(TenantMap([LAB]))
    flushed = [b for m in AmiParser().feed(data) for b in one_by_one.translate(m)]
    assert last_states(flushed) == expected


# -- tenancy -------------------------------------------------------------------------------


def renamed(scenario_steps: list[Step], pbx: str, digit: str) -> list[Step]:
    """The same calls on another tenant: endpoints, contexts, queue, room and uniqueids
    (`1795…`/`1796…` → `<digit>795…`/`<digit>796…`)."""

    def rename(data: bytes) -> bytes:
        data = data.replace(b"MojaCentrala", pbx.encode())
        data = data.replace(b"Kolejka1", f"{pbx}-Kolejka".encode())
        data = data.replace(b"SesjaRady", f"{pbx}-Sala".encode())
        for epoch in (b"1795", b"1796"):
            data = data.replace(epoch, digit.encode() + epoch[1:])
        return data

    return [
        ([AmiMessage(AmiParser().feed(rename(encode(a)))[0]) for a in actions], rename(chunk))
        for actions, chunk in scenario_steps
    ]


def encode(action: AmiMessage) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in action.headers).encode() + b"\r\n"


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_events_of_unknown_tenants_are_dropped(scenario: str) -> None:
    translator = Translator(TenantMap.of("InnaCentrala", "Moja"))
    assert run_steps_of(translator, steps(scenario)) == []
    translator = Translator(TenantMap([LAB]))
    assert run_steps_of(translator, renamed(steps(scenario), "ObcaCentrala", "2")) == []


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_interleaved_tenants_each_get_only_their_own(scenario: str) -> None:
    tenants = TenantMap([LAB, TenantRule("InnaCentrala")])
    own = steps(scenario)
    other = renamed(own, "InnaCentrala", "3")
    stranger = renamed(own, "ObcaCentrala", "4")
    chunks = [c for trio in zip(own, other, stranger, strict=True) for c in trio]
    batches = run_steps_of(Translator(tenants), chunks)
    mine = [(pbx, events) for pbx, events in batches if pbx == PBX]
    theirs = [(pbx, events) for pbx, events in batches if pbx != PBX]
    assert items(mine) == EXPECTED[scenario]
    assert {pbx for pbx, _ in theirs} <= {"InnaCentrala"}
    assert len(theirs) == len(mine)
    for (_, a), (_, b) in zip(mine, theirs, strict=True):
        assert [e.event_type for e in a] == [e.event_type for e in b]
        for event in b:
            text = repr(event.payload())
            assert "MojaCentrala" not in text and "Kolejka1" not in text


def msg(*headers: tuple[str, str]) -> AmiMessage:
    return AmiMessage(headers)


def test_shared_queue_and_room_never_show_another_tenant() -> None:
    tenants = TenantMap([LAB, TenantRule("InnaCentrala")])
    translator = Translator(tenants)
    # A member of LAB's queue whose endpoint is InnaCentrala's: dropped.
    translator.feed(
        msg(
            ("Event", "QueueMemberStatus"),
            ("Queue", "Kolejka1"),
            ("MemberName", "Intruz"),
            ("Interface", "PJSIP/InnaCentrala-201"),
            ("StateInterface", "PJSIP/InnaCentrala-201"),
            ("Membership", "dynamic"),
            ("CallsTaken", "0"),
            ("Status", "1"),
            ("Paused", "0"),
        )
    )
    # InnaCentrala's phone in LAB's room: dropped.
    translator.feed(
        msg(
            ("Event", "ConfbridgeJoin"),
            ("Conference", "SesjaRady"),
            ("Channel", "PJSIP/InnaCentrala-201-0000000a"),
            ("CallerIDNum", "201"),
            ("CallerIDName", "Intruz"),
        )
    )
    # A queue nobody owns: its caller count goes nowhere.
    translator.feed(msg(("Event", "QueueParams"), ("Queue", "Cudza"), ("Calls", "3")))
    assert translator.flush() == []
    assert translator.dropped == {"QueueMemberStatus": 1, "ConfbridgeJoin": 1, "QueueParams": 1}
    # A dynamic member of InnaCentrala in a queue nobody lists, via a Local interface.
    translator.feed(
        msg(
            ("Event", "QueueMemberAdded"),
            ("Queue", "InnaCentrala-Kolejka"),
            ("MemberName", "Ola"),
            ("Interface", "Local/201@InnaCentrala/n"),
            ("StateInterface", "Custom:201"),
            ("Membership", "dynamic"),
            ("CallsTaken", "2"),
            ("Status", "5"),
            ("Paused", "0"),
        )
    )
    ((pbx, (event,)),) = translator.flush()
    assert pbx == "InnaCentrala"
    assert event.payload() == {
        "peer": "InnaCentrala-201",
        "queue": "InnaCentrala-Kolejka",
        "m_status": "5",
        "m_ct": "2",
        "m_mbshp": "dynamic",
        "m_paused": "0",
        "m_name": "Ola",
        "m_location": "Local/201@InnaCentrala/n",
    }


def hint(exten: str, context: str, device: str, status: str) -> AmiMessage:
    return msg(
        ("Event", "ExtensionStatus"),
        ("Exten", exten),
        ("Context", context),
        ("Hint", device),
        ("Status", status),
        ("StatusText", "whatever"),
    )


def test_a_hint_belongs_to_its_context_not_to_the_device_it_watches() -> None:
    """Two PBXes on one Asterisk: `exten => 777,hint,PJSIP/MojaCentrala-104` in context
    `Druga` (InnaCentrala's) is InnaCentrala's extension 777; it says nothing to
    MojaCentrala, whose 104 is published from its own device state and hint only."""
    inna = TenantRule("InnaCentrala", contexts=frozenset({"Druga"}))
    translator = Translator(TenantMap([LAB, inna]))
    translator.feed(hint("777", "Druga", "PJSIP/MojaCentrala-104", "1"))
    batches = translator.flush()
    assert [(pbx, [(e.event_type, e.payload()) for e in events]) for pbx, events in batches] == [
        ("InnaCentrala", [ext("777", 1)])
    ]
    # MojaCentrala's own hint of 104 is unaffected by the other context's.
    translator.feed(hint("104", "MojaCentrala", "PJSIP/MojaCentrala-104", "0"))
    assert items(translator.flush()) == [[sub("104", 0), ext("104", 0)]]
    translator.feed(hint("777", "Druga", "PJSIP/MojaCentrala-104", "8"))
    ((pbx, events),) = translator.flush()
    assert pbx == "InnaCentrala" and [e.payload() for e in events] == [ext("777", 8)[1]]
    # A hint in MojaCentrala's context of an endpoint no tenant has: MojaCentrala's 301.
    translator.feed(hint("301", "MojaCentrala", "PJSIP/ObcaCentrala-301", "0"))
    assert items(translator.flush()) == [[ext("301", 0)]]
    # A context of no PBX: dropped, counted.
    translator.feed(hint("104", "Obca", "PJSIP/MojaCentrala-104", "1"))
    assert translator.flush() == []
    assert translator.dropped == {"ExtensionStatus": 1}


def test_longest_prefix_wins() -> None:
    tenants = TenantMap.of("Firma", "Firma-Oddzial")
    assert tenants.device("PJSIP/Firma-101") == ("Firma", "Firma-101", "101")
    assert tenants.device("PJSIP/Firma-Oddzial-101") == (
        "Firma-Oddzial",
        "Firma-Oddzial-101",
        "101",
    )
    assert tenants.channel("SIP/Firma-Oddzial-7-0000001f") == (
        "Firma-Oddzial",
        "Firma-Oddzial-7",
        "7",
    )
    assert tenants.device("PJSIP/Firma2-101") is None
    assert tenants.device("CBAnn/Firma-sala") is None
    assert tenants.device("Queue:Firma-kolejka_avail") is None
    assert tenants.context("Firma-Oddzial-hints") == "Firma-Oddzial"
    assert tenants.context("Firma") == "Firma"
    assert tenants.context("Firma2") is None
    assert tenants.account("Firma-Oddzial") == "Firma-Oddzial"
    with pytest.raises(ValueError):
        TenantMap(
            [TenantRule("A", queues=frozenset({"Q"})), TenantRule("B", queues=frozenset({"Q"}))]
        )


def test_custom_endpoint_prefix_keeps_the_contract_peer_name() -> None:
    tenants = TenantMap([TenantRule("Acme", endpoint_prefix="acme_")])
    translator = Translator(tenants)
    translator.feed(
        msg(("Event", "DeviceStateChange"), ("Device", "PJSIP/acme_12"), ("State", "RINGINUSE"))
    )
    ((pbx, (event,)),) = translator.flush()
    assert (pbx, event.payload()) == ("Acme", {"peer": "Acme-12", "statusValue": 8})


# -- states the lab did not produce ----------------------------------------------------


def test_hint_bitmasks_and_hold_events() -> None:
    translator = Translator(TenantMap([LAB]))

    def status(bits: str) -> list[list[Item]]:
        translator.feed(
            msg(
                ("Event", "ExtensionStatus"),
                ("Exten", "101"),
                ("Context", "MojaCentrala"),
                ("Hint", "PJSIP/MojaCentrala-101"),
                ("Status", bits),
            )
        )
        return items(translator.flush())

    assert status("9") == [[sub("101", 8), ext("101", 8)]]  # In Use + Ringing
    assert status("17") == [[sub("101", 16), ext("101", 16)]]  # In Use + On Hold
    assert status("-1") == [[ext("101", 4)]]  # hint removed; the device is not
    assert status("-2") == []
    snapshot = (
        ("Channel", "PJSIP/MojaCentrala-101-0000002a"),
        ("ChannelState", "6"),
        ("ConnectedLineNum", "48600100200"),
        ("ConnectedLineName", "Klient"),
        ("Uniqueid", "1.42"),
    )
    assert status("1") == [[sub("101", 1), ext("101", 1)]]
    translator.feed(msg(("Event", "Newchannel"), *snapshot))
    assert items(translator.flush()) == [[sub("101", 1, "48600100200", "Klient")]]
    # 101 presses hold: Asterisk raises `Hold` on 101's channel and changes no state of
    # 101's; nothing is published for it.
    translator.feed(msg(("Event", "Hold"), *snapshot))
    assert items(translator.flush()) == []
    translator.feed(msg(("Event", "Unhold"), *snapshot))
    assert items(translator.flush()) == []


def test_startup_listing_of_a_call_in_progress() -> None:
    """CoreShowChannel and QueueEntry rebuild calls that began before we connected."""
    translator = Translator(TenantMap([LAB]))
    translator.feed(
        msg(
            ("Event", "CoreShowChannel"),
            ("Channel", "PJSIP/MojaCentrala-103-00000002"),
            ("ChannelState", "6"),
            ("ConnectedLineNum", "<unknown>"),
            ("ConnectedLineName", "<unknown>"),
            ("Exten", "500"),
            ("Uniqueid", "1795838285.2"),
        )
    )
    translator.feed(
        msg(
            ("Event", "DeviceStateChange"), ("Device", "PJSIP/MojaCentrala-103"), ("State", "INUSE")
        )
    )
    assert items(translator.flush()) == [[sub("103", 1, "", "")]]
    translator.feed(
        msg(
            ("Event", "QueueEntry"),
            ("Queue", "Kolejka1"),
            ("Channel", "PJSIP/MojaCentrala-103-00000002"),
            ("Uniqueid", "1795838285.2"),
        )
    )
    assert items(translator.flush()) == [[sub("103", 32, "", "")]]


def test_removed_member_and_unknown_events() -> None:
    translator = Translator(TenantMap([LAB]))
    member = (
        ("Queue", "Kolejka1"),
        ("MemberName", "Agent 3"),
        ("Interface", "PJSIP/MojaCentrala-103"),
        ("StateInterface", "PJSIP/MojaCentrala-103"),
        ("Membership", "dynamic"),
        ("CallsTaken", "0"),
        ("Status", "1"),
        ("Paused", "0"),
        ("Unknown", "ignored"),
    )
    translator.feed(msg(("Event", "QueueMemberAdded"), *member))
    translator.feed(msg(("Event", "SomethingNew"), ("Device", "PJSIP/MojaCentrala-103")))
    translator.feed(msg(("Response", "Success"), ("Exten", "103"), ("Status", "0")))
    (batch,) = items(translator.flush())
    assert batch[0][1]["m_mbshp"] == "dynamic"
    translator.feed(msg(("Event", "QueueMemberRemoved"), *member))
    (batch,) = items(translator.flush())
    assert batch[0][0] == "qmember"
    # Gone: the same status again is news (a new member), not a repeat.
    translator.feed(msg(("Event", "QueueMemberStatus"), *member))
    assert len(translator.flush()) == 1


# -- hand-written sequences: hold, two calls, busy, /dial -----------------------------------
#
# What the lab has not recorded yet, written after Asterisk's documented and observed
# behaviour: the channel snapshot of every channel event (ASTERISK.md "What the AMI stream
# looks like"); chan_pjsip's indicate(AST_CONTROL_HOLD) calls ast_devstate_changed(ONHOLD,
# "PJSIP/<endpoint>") for the channel that *receives* the hold — the held party — while
# `Hold`/`Unhold` are raised on the channel whose phone pressed hold; a Dial to a phone
# that answers 486 creates its leg in state Down and ends `DialEnd DialStatus: BUSY`.

STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}


def chan(
    event: str,
    ext: str,
    counter: int,
    state: int,
    connected: tuple[str, str] = ("<unknown>", "<unknown>"),
    exten: str = "s",
    *extra: tuple[str, str],
) -> AmiMessage:
    """An event on `PJSIP/MojaCentrala-<ext>-<counter>` (uniqueid `1795900000.<counter>`)."""
    return msg(
        ("Event", event),
        ("Channel", f"PJSIP/MojaCentrala-{ext}-{counter:08x}"),
        ("ChannelState", str(state)),
        ("ChannelStateDesc", STATE_DESC[state]),
        ("CallerIDNum", ext),
        ("CallerIDName", f"MojaCentrala {ext}"),
        ("ConnectedLineNum", connected[0]),
        ("ConnectedLineName", connected[1]),
        ("Context", "MojaCentrala"),
        ("Exten", exten),
        ("Uniqueid", f"1795900000.{counter}"),
        ("Linkedid", "1795900000.0"),
        *extra,
    )


def dial(event: str, caller: AmiMessage, dest: AmiMessage, status: str = "") -> AmiMessage:
    """`DialBegin`/`DialEnd`: the caller's snapshot plus the dest's with the Dest prefix."""
    headers = [(k, v) for k, v in caller.headers if k != "Event"]
    headers += [("Dest" + k, v) for k, v in dest.headers if k != "Event"]
    if status:
        headers.append(("DialStatus", status))
    return msg(("Event", event), *headers)


def device(ext: str, state: str, status: int) -> list[AmiMessage]:
    """One device change: `DeviceStateChange` and the hint's `ExtensionStatus`."""
    return [
        msg(
            ("Event", "DeviceStateChange"),
            ("Device", f"PJSIP/MojaCentrala-{ext}"),
            ("State", state),
        ),
        hint(ext, "MojaCentrala", f"PJSIP/MojaCentrala-{ext}", str(status)),
    ]


def bridge(event: str, channel: AmiMessage, bridge_id: str) -> AmiMessage:
    headers = [(k, v) for k, v in channel.headers if k != "Event"]
    return msg(("Event", event), ("BridgeUniqueid", bridge_id), *headers)


def run_steps(translator: Translator, *steps: list[AmiMessage]) -> list[list[list[Item]]]:
    """Each step is one flush window; its batches."""
    out = []
    for step in steps:
        for one in step:
            translator.feed(one)
        out.append(items(translator.flush()))
    return out


def talking(translator: Translator, a: str, b: str, ca: int, cb: int, bridge_id: str) -> None:
    """`a` called `b`, `b` answered: two Up channels in one bridge, both devices INUSE."""
    leg_a = chan("Newchannel", a, ca, 6, (b, f"MojaCentrala {b}"), b)
    leg_b = chan("Newchannel", b, cb, 6, (a, f"MojaCentrala {a}"), b)
    run_steps(
        translator,
        [leg_a, leg_b, *device(a, "INUSE", 1), *device(b, "INUSE", 1)],
        [bridge("BridgeEnter", leg_a, bridge_id), bridge("BridgeEnter", leg_b, bridge_id)],
    )


def test_hold_is_on_the_held_party_as_asterisk_says() -> None:
    translator = Translator(TenantMap([LAB]))
    talking(translator, "101", "102", 0x10, 0x11, "b1")
    holder = chan("Hold", "101", 0x10, 6, ("102", "MojaCentrala 102"), "102")
    held = run_steps(
        translator,
        [holder],  # 101 pressed hold: no state of 101's changes
        device("102", "ONHOLD", 16),  # chan_pjsip: the held party's device
    )
    assert held == [[], [[sub("102", 16, "101", "MojaCentrala 101"), ext("102", 16)]]]
    resumed = run_steps(
        translator,
        [chan("Unhold", "101", 0x10, 6, ("102", "MojaCentrala 102"), "102")],
        device("102", "INUSE", 1),
    )
    assert resumed == [[], [[sub("102", 1, "101", "MojaCentrala 101"), ext("102", 1)]]]
    # The other side: 102 presses hold, 101 is the held one.
    other = run_steps(
        translator,
        [chan("Hold", "102", 0x11, 6, ("101", "MojaCentrala 101"), "102")],
        device("101", "ONHOLD", 16),
    )
    assert other == [[], [[sub("101", 16, "102", "MojaCentrala 102"), ext("101", 16)]]]


def test_with_two_calls_the_party_is_the_active_one() -> None:
    translator = Translator(TenantMap([LAB]))
    talking(translator, "101", "102", 0x10, 0x11, "b1")
    ch1 = ("102", "MojaCentrala 102")
    # 101 holds 102, then calls 103 on a second line.
    out = run_steps(
        translator,
        [chan("Hold", "101", 0x10, 6, ch1, "102"), *device("102", "ONHOLD", 16)],
        [chan("Newchannel", "101", 0x12, 4, exten="103")],
        [chan("Newstate", "101", 0x12, 6, ("103", "MojaCentrala 103"), "103")],
    )
    assert out == [
        [[sub("102", 16, "101", "MojaCentrala 101"), ext("102", 16)]],
        [[sub("101", 32, "103", "")]],  # dialled 103, not answered: 32
        [[sub("101", 1, "103", "MojaCentrala 103")]],
    ]
    # Swap: 101 holds 103 and resumes 102 — the older channel is now the active call.
    leg_103 = chan("Newchannel", "103", 0x13, 6, ("101", "MojaCentrala 101"), "103")
    out = run_steps(
        translator,
        [leg_103, *device("103", "INUSE", 1)],
        [
            bridge("BridgeEnter", leg_103, "b2"),
            bridge("BridgeEnter", chan("X", "101", 0x12, 6, ("103", "MojaCentrala 103")), "b2"),
        ],
        [
            chan("Hold", "101", 0x12, 6, ("103", "MojaCentrala 103"), "103"),
            chan("Unhold", "101", 0x10, 6, ch1, "102"),
            *device("103", "ONHOLD", 16),
            *device("102", "INUSE", 1),
        ],
    )
    assert out == [
        [[sub("103", 1, "101", "MojaCentrala 101"), ext("103", 1)]],
        [],
        [
            [sub("101", 1, "102", "MojaCentrala 102")],
            [sub("103", 16, "101", "MojaCentrala 101"), ext("103", 16)],
            [sub("102", 1, "101", "MojaCentrala 101"), ext("102", 1)],
        ],
    ]
    # 102 hangs up: 101's only call is the held one with 103, Asterisk still says INUSE.
    out = run_steps(
        translator,
        [chan("Hangup", "102", 0x11, 6, ("101", "MojaCentrala 101"), "102")],
        [chan("Hangup", "101", 0x10, 6, ch1, "102"), *device("102", "NOT_INUSE", 0)],
    )
    assert out == [[], [[sub("101", 1, "103", "MojaCentrala 103")], [sub("102", 0), ext("102", 0)]]]


def test_a_busy_callee_never_shows_the_caller_and_the_caller_never_itself() -> None:
    """102 talks to the echo test (700); our /dial 101→102 (CallerID "MojaCentrala 101"
    <101>, echoed as 101's connected line) gets 486 Busy Here from 102's phone."""
    translator = Translator(TenantMap([LAB]))
    translator.expect_originate("PJSIP/MojaCentrala-101", "102")
    echo = chan("Newchannel", "102", 0x20, 4, exten="700")
    setup = run_steps(
        translator,
        [echo, *device("102", "INUSE", 1)],
        [chan("Newstate", "102", 0x20, 6, exten="700")],
    )
    assert setup == [[[sub("102", 32, "700", ""), ext("102", 1)]], [[sub("102", 1, "700", "")]]]
    me = ("101", "MojaCentrala 101")
    a_leg = chan("Newchannel", "101", 0x21, 0)
    b_leg = chan("Newchannel", "102", 0x22, 0, me, "102")
    out = run_steps(
        translator,
        [a_leg, chan("NewConnectedLine", "101", 0x21, 0, me)],  # Down: no call yet
        [chan("Newstate", "101", 0x21, 5, me), *device("101", "RINGING", 8)],
        [chan("Newstate", "101", 0x21, 6, me), *device("101", "INUSE", 1)],
        [b_leg, dial("DialBegin", chan("X", "101", 0x21, 6, me, "102"), b_leg)],
        [chan("NewConnectedLine", "101", 0x21, 6, ("102", "MojaCentrala 102"), "102")],
        [dial("DialEnd", chan("X", "101", 0x21, 6, me, "102"), b_leg, "BUSY")],
        [chan("Hangup", "102", 0x22, 0, me, "102")],
        [chan("Hangup", "101", 0x21, 6, ("102", "MojaCentrala 102"), "102")],
        device("101", "NOT_INUSE", 0),
    )
    assert out == [
        [],
        [[sub("101", 8, "102", ""), ext("101", 8)]],  # the party being called, not 101
        [[sub("101", 1, "102", ""), ext("101", 1)]],
        [[sub("101", 32, "102", "")]],  # 102's Down leg: 102 keeps its echo call
        [[sub("101", 32, "102", "MojaCentrala 102")]],
        [[sub("101", 1, "102", "MojaCentrala 102")]],
        [],  # the rejected leg goes: 102 never showed 101
        [],  # 101's channel is gone, its device state follows
        [[sub("101", 0), ext("101", 0)]],
    ]


def test_a_refused_dial_leaves_no_expected_party() -> None:
    translator = Translator(TenantMap([LAB]))
    translator.expect_originate("PJSIP/MojaCentrala-101", "102")
    translator.cancel_originate("PJSIP/MojaCentrala-101", "102")
    me = ("101", "MojaCentrala 101")
    out = run_steps(
        translator,
        [chan("Newchannel", "101", 0x30, 0), chan("Newstate", "101", 0x30, 5, me)],
        device("101", "RINGING", 8),
    )
    assert out == [[], [[sub("101", 8), ext("101", 8)]]]


def test_a_lost_registration_is_unavailable_once() -> None:
    """`register_lost` as ASTERISK.md describes it: 17 s of nothing, then the qualify
    timeout's four events; after the restart NonQualified, Removed, Reachable, Idle."""
    translator = Translator(TenantMap([LAB]))
    peer = ("Peer", "PJSIP/MojaCentrala-103")
    lost = [
        hint("103", "MojaCentrala", "PJSIP/MojaCentrala-103", "4"),
        msg(("Event", "PeerStatus"), ("ChannelType", "PJSIP"), peer, ("PeerStatus", "Unreachable")),
        msg(
            ("Event", "DeviceStateChange"),
            ("Device", "PJSIP/MojaCentrala-103"),
            ("State", "UNAVAILABLE"),
        ),
        msg(
            ("Event", "ContactStatus"),
            ("AOR", "MojaCentrala-103"),
            ("ContactStatus", "Unreachable"),
        ),
    ]
    back = [
        msg(
            ("Event", "ContactStatus"),
            ("AOR", "MojaCentrala-103"),
            ("ContactStatus", "NonQualified"),
        ),
        msg(("Event", "ContactStatus"), ("AOR", "MojaCentrala-103"), ("ContactStatus", "Removed")),
        msg(("Event", "PeerStatus"), ("ChannelType", "PJSIP"), peer, ("PeerStatus", "Reachable")),
        hint("103", "MojaCentrala", "PJSIP/MojaCentrala-103", "0"),
        msg(
            ("Event", "DeviceStateChange"),
            ("Device", "PJSIP/MojaCentrala-103"),
            ("State", "NOT_INUSE"),
        ),
        msg(
            ("Event", "ContactStatus"), ("AOR", "MojaCentrala-103"), ("ContactStatus", "Reachable")
        ),
    ]
    assert run_steps(translator, lost, back) == [
        [[sub("103", 4), ext("103", 4)]],
        [[sub("103", 0), ext("103", 0)]],
    ]
    assert translator.device_state("PJSIP/MojaCentrala-103") == 0
