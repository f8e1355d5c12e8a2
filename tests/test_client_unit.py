"""The client's pure parts: backoff, dates, parsing, names, the watch model, the API."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from datetime import date, datetime
from itertools import islice

import pytest

import cloudpbx.client as sdk
from cloudpbx.client import (
    ConferenceMemberEvent,
    DeviceState,
    ExtStatusEvent,
    PbxState,
    ProtocolError,
    QueueMemberEvent,
    RetryPolicy,
    SmsStatusEvent,
    SubscriberEvent,
    UnknownEvent,
    backoff,
    channel_extension,
    describe,
    extension,
    parse_message,
)
from cloudpbx.client._calls import error_for, redact
from cloudpbx.client._dates import to_date


def test_public_namespace_is_pinned() -> None:
    """Everything public is in `__all__`, and nothing else is (like httpx's own test)."""
    public = {
        name
        for name, value in vars(sdk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(sdk.__all__) == public
    assert len(sdk.__all__) == len(set(sdk.__all__))


def test_client_imports_no_server_module() -> None:
    code = (
        "import sys, cloudpbx.client, cloudpbx.cli.client; "
        "print([m for m in sys.modules if m.startswith('cloudpbx.') "
        "and not m.startswith(('cloudpbx.client', 'cloudpbx.cli'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_backoff_grows_caps_and_jitters() -> None:
    assert list(islice(backoff(1.0, 2.0, 5.0, jitter=0.0), 5)) == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert list(islice(backoff(1.0, 2.0, 5.0, jitter=0.5, rand=lambda: 1.0), 3)) == [0.5, 1.0, 2.0]
    assert len(list(RetryPolicy(attempts=3).delays())) == 3
    assert list(RetryPolicy(attempts=0).delays()) == []
    assert len(list(islice(RetryPolicy(attempts=None).delays(), 50))) == 50


def test_dates() -> None:
    today = date(2026, 3, 12)
    assert to_date("2026-03-01") == date(2026, 3, 1)
    assert to_date("2026-03-01T23:30:00+01:00") == date(2026, 3, 1)
    assert to_date(datetime(2026, 3, 2, 8)) == date(2026, 3, 2)
    assert to_date("today", today=today) == today
    assert to_date("Yesterday", today=today) == date(2026, 3, 11)
    with pytest.raises(ValueError, match="not a day"):
        to_date("next week")


def test_extension_helpers() -> None:
    assert extension("MojaCentrala-101") == "101"
    assert extension("Moja-Centrala-101") == "101"
    assert extension("Moja-Centrala-101", "Moja-Centrala") == "101"
    assert extension("SIP/MojaCentrala-101") == "101"
    assert channel_extension("SIP/MojaCentrala-101-0005f005") == "101"
    assert channel_extension("PJSIP/Moja-Centrala-7-00000001", "Moja-Centrala") == "7"


def message(text: object, **extra: object) -> str:
    return json.dumps({"id": 7, "channel": "pbx_MojaCentrala", "text": text, **extra})


def test_parse_message_is_lenient_where_it_can_be() -> None:
    parsed = parse_message(message(json.dumps({"extstatus": {"exten": "130", "status": "4"}})))
    (event,) = parsed.events
    assert parsed.id == 7 and event.raw == {"exten": "130", "status": "4"}
    assert getattr(event, "state", None) is DeviceState.UNAVAILABLE  # "4" read as 4
    odd = parse_message(message({"subscriber": "not an object", "future": {"a": 1}}))
    assert odd.events == (
        UnknownEvent("subscriber", {"value": "not an object"}),
        UnknownEvent("future", {"a": 1}),
    )
    for bad in ("not json", "[]", json.dumps({"text": {}}), json.dumps({"id": 1})):
        with pytest.raises(ProtocolError):
            parse_message(bad)


def test_error_body_forms() -> None:
    plain = error_for(400, b"Parameter is missing", "text/plain", None)
    assert isinstance(plain, sdk.BadRequest) and plain.message == "Parameter is missing"
    assert plain.code is None
    empty = error_for(502, b"", "text/html", None)
    assert isinstance(empty, sdk.ServerError) and empty.message == "Bad Gateway"
    other = error_for(429, b'{"error": "slow down", "code": "rate"}', "application/json", None)
    assert type(other) is sdk.APIError and (other.message, other.code) == ("slow down", "rate")
    assert redact("ws://h/ws/pbx_A?pbxkey=SECRET&last_event_id=3") == (
        "ws://h/ws/pbx_A?pbxkey=***&last_event_id=3"
    )


def sub(status: int, number: str | None = None, name: str | None = None) -> SubscriberEvent:
    raw = {"peer": "MojaCentrala-101", "statusValue": status}
    if number is not None:
        raw |= {"connectPeerNumber": number, "connectPeerName": name or ""}
    return SubscriberEvent.from_json(raw)


def member(paused: bool, reason: str | None = None) -> QueueMemberEvent:
    raw = {
        "peer": "MojaCentrala-102",
        "queue": "Kolejka1",
        "m_status": "6",
        "m_ct": "2",
        "m_mbshp": "dynamic",
        "m_paused": "1" if paused else "0",
        "m_name": "Ola",
        "m_location": "SIP/MojaCentrala-102",
    }
    if reason is not None:
        raw["m_reason"] = reason
    return QueueMemberEvent.from_json(raw)


def conf(action: str) -> ConferenceMemberEvent:
    return ConferenceMemberEvent.from_json(
        {
            "channel": "SIP/MojaCentrala-104-0005f005",
            "action": action,
            "conference": "SesjaRady",
            "callerIDName": "Ewa",
            "callerIDNum": "104",
        }
    )


def sms(status: str) -> SmsStatusEvent:
    return SmsStatusEvent.from_json({"MsgId": "42", "to": "48600100200", "status": status})


def test_describe_in_both_languages() -> None:
    assert describe(sub(8, "600100200", "Jan")) == "101: Ringing ↔ 600100200 (Jan)"
    assert describe(sub(8, "600100200", "Jan"), "pl") == "101: Dzwoni ↔ 600100200 (Jan)"
    assert describe(sub(3)) == "101: unknown (3)"
    assert describe(member(True, "lunch")) == (
        "agent 102 (Ola) in Kolejka1: Ringing, paused (lunch), 2 calls taken"
    )
    assert (
        describe(member(False), "pl") == "agent 102 (Ola) w kolejce Kolejka1: Dzwoni, odebrane: 2"
    )
    assert describe(conf("remove"), "pl") == "Ewa <104> opuścił(a) konferencję SesjaRady"
    assert describe(sms("DELIVERED"), "pl") == "SMS 42 do 48600100200: Dostarczona"
    assert describe(sms("NEW_STATUS")) == "SMS 42 to 48600100200: NEW_STATUS"
    assert describe(UnknownEvent("x", {"a": 1})) == '{"a": 1}'
    for state in DeviceState:
        assert state.label("pl") and state.label("en")


def test_pbx_state_follows_events() -> None:
    state = PbxState(pbx="MojaCentrala")
    state.apply(sub(8, "600100200", "Jan"), 1, now=10.0)
    state.apply(sub(1), 2, now=12.0)
    view = state.extensions["101"]
    assert (view.status, view.connected_number, view.since) == (1, "600100200", 12.0)
    state.apply(sub(0), 3, now=20.0)
    assert state.extensions["101"].connected_number is None
    state.apply(member(True, "lunch"), 4)
    assert state.agents[("Kolejka1", "MojaCentrala-102")].paused and state.queues == {"Kolejka1": 0}
    state.apply(conf("add"), 5)
    assert list(state.conferences["SesjaRady"]) == ["SIP/MojaCentrala-104-0005f005"]
    state.apply(conf("remove"), 6)
    assert state.conferences == {}
    for n in range(15):
        state.apply(
            SmsStatusEvent.from_json({"MsgId": str(n), "to": "48", "status": "SENT"}), 7 + n
        )
    assert list(state.sms) == [str(n) for n in range(5, 15)]
    state.apply(UnknownEvent("future", {}), 30)
    assert (state.last_event_id, state.events_seen) == (30, 22)


def test_a_calling_phone_stays_connecting_when_its_hint_says_in_use() -> None:
    """Asterisk's hint of a phone placing a call reads In Use; 32 comes from `subscriber`."""
    state = PbxState(pbx="MojaCentrala")
    hint = ExtStatusEvent.from_json
    state.apply(sub(32, "102"), 1, now=1.0)
    state.apply(hint({"exten": "101", "status": 1}), 2, now=2.0)
    assert (state.extensions["101"].status, state.extensions["101"].since) == (32, 1.0)
    state.apply(sub(1, "102"), 3, now=3.0)
    state.apply(hint({"exten": "101", "status": 0}), 4, now=4.0)
    assert state.extensions["101"].status == 0


def test_watch_view_keeps_numbers_and_states_whole_in_a_narrow_terminal() -> None:
    """Free text wraps; extension numbers, states and times never fold mid-word."""
    from io import StringIO

    from rich.console import Console

    from cloudpbx.cli.client import Lang, render_state

    state = PbxState(pbx="MojaCentrala")
    state.apply(sub(8, "48600100200", "Jan Kowalski-Wiśniewski z Działu Sprzedaży"), 1, now=0.0)
    state.apply(member(True, "Praca administracyjna"), 2, now=0.0)
    out = StringIO()
    Console(file=out, width=44, color_system=None).print(render_state(state, Lang.en, now=75.0))
    lines = out.getvalue().splitlines()
    row = next(line for line in lines if "│ 101" in line)
    assert "Ringing" in row and "1:15" in row
    agent = next(line for line in lines if "Kolejka1" in line and "102" in line)
    assert "Ringing" in agent
