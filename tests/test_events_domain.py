"""The contract's WebSocket events as values: field names, JSON types, grouping."""

from __future__ import annotations

import orjson
import pytest

from cloudpbx.domain.events import (
    ConferenceMember,
    Event,
    ExtStatus,
    QueueCalls,
    QueueMember,
    SmsSendResponse,
    Subscriber,
    channel_name,
    group_into_texts,
    peer_name,
)
from cloudpbx.domain.states import DeviceState, MemberStatus, SmsStatus


def roundtrip(event: Event) -> dict[str, object]:
    """The payload as a client decodes it (through real JSON, as on the wire)."""
    decoded = orjson.loads(orjson.dumps({event.event_type: event.payload()}))
    assert list(decoded) == [event.event_type]
    value: dict[str, object] = decoded[event.event_type]
    return value


def test_subscriber_without_call_has_only_peer_and_int_status() -> None:
    payload = roundtrip(Subscriber("MojaCentrala-101", DeviceState.IN_USE))
    assert payload == {"peer": "MojaCentrala-101", "statusValue": 1}
    assert type(payload["statusValue"]) is int


def test_subscriber_describing_a_call_has_string_connect_fields() -> None:
    payload = roundtrip(
        Subscriber("MojaCentrala-101", DeviceState.RINGING, "600100200", "Jan Nowak")
    )
    assert payload == {
        "peer": "MojaCentrala-101",
        "statusValue": 8,
        "connectPeerNumber": "600100200",
        "connectPeerName": "Jan Nowak",
    }
    # A call without a caller name still carries both fields, as strings.
    payload = roundtrip(Subscriber("MojaCentrala-101", DeviceState.CONNECTING, "102"))
    assert payload["connectPeerNumber"] == "102"
    assert payload["connectPeerName"] == ""
    assert payload["statusValue"] == 32


@pytest.mark.parametrize("state", list(DeviceState))
def test_extstatus_status_is_an_int_of_the_documented_values(state: DeviceState) -> None:
    payload = roundtrip(ExtStatus("130", state))
    assert payload == {"exten": "130", "status": int(state)}
    assert type(payload["status"]) is int
    assert payload["status"] in {0, 1, 2, 4, 8, 16, 32}


def test_queue_calls_is_a_string_count_and_peer_is_the_queue() -> None:
    payload = roundtrip(QueueCalls("Kolejka1", 1))
    assert payload == {"peer": "Kolejka1", "calls": "1"}
    assert roundtrip(QueueCalls("Kolejka1", 0))["calls"] == "0"


def test_qmember_every_field_is_a_string_and_reason_only_when_given() -> None:
    member = QueueMember(
        peer="MojaCentrala-101",
        queue="Kolejka1",
        status=MemberStatus.IDLE,
        calls_taken=0,
        dynamic=False,
        paused=False,
        name="Agent 1",
        location="SIP/MojaCentrala-101",
    )
    payload = roundtrip(member)
    assert payload == {
        "peer": "MojaCentrala-101",
        "queue": "Kolejka1",
        "m_status": "1",
        "m_ct": "0",
        "m_mbshp": "static",
        "m_paused": "0",
        "m_name": "Agent 1",
        "m_location": "SIP/MojaCentrala-101",
    }
    assert "m_reason" not in payload
    assert all(type(value) is str for value in payload.values())

    paused = roundtrip(
        QueueMember(
            peer="MojaCentrala-102",
            queue="Kolejka1",
            status=MemberStatus.ON_HOLD,
            calls_taken=12,
            dynamic=True,
            paused=True,
            name="Agent 2",
            location="SIP/MojaCentrala-102",
            reason="Przerwa",
        )
    )
    assert paused["m_reason"] == "Przerwa"
    assert paused["m_paused"] == "1"
    assert paused["m_mbshp"] == "dynamic"
    assert paused["m_ct"] == "12"
    assert paused["m_status"] == "8"
    assert all(type(value) is str for value in paused.values())


@pytest.mark.parametrize("status", list(MemberStatus))
def test_qmember_status_covers_0_to_8(status: MemberStatus) -> None:
    member = QueueMember("p", "q", status, 0, False, False, "n", "SIP/x")
    assert roundtrip(member)["m_status"] == str(int(status))
    assert 0 <= int(status) <= 8


def test_cmember_fields() -> None:
    payload = roundtrip(
        ConferenceMember("SIP/MojaCentrala-101-0005f005", "add", "SesjaRady", "Jan Nowak", "101")
    )
    assert payload == {
        "channel": "SIP/MojaCentrala-101-0005f005",
        "action": "add",
        "conference": "SesjaRady",
        "callerIDName": "Jan Nowak",
        "callerIDNum": "101",
    }


@pytest.mark.parametrize("status", list(SmsStatus))
def test_sms_send_response_status_is_the_name(status: SmsStatus) -> None:
    payload = roundtrip(SmsSendResponse("3292468348841377230", "48600100200", status))
    assert payload == {"MsgId": "3292468348841377230", "to": "48600100200", "status": status.name}
    assert type(payload["status"]) is str


def test_every_event_type_name_is_the_contracts() -> None:
    names = {
        Subscriber.event_type,
        ExtStatus.event_type,
        QueueCalls.event_type,
        QueueMember.event_type,
        ConferenceMember.event_type,
        SmsSendResponse.event_type,
    }
    assert names == {"subscriber", "extstatus", "queue", "qmember", "cmember", "smsSendResponse"}


def test_group_keeps_different_types_of_one_change_in_one_text() -> None:
    events: list[Event] = [
        Subscriber("MojaCentrala-101", DeviceState.RINGING),
        ExtStatus("101", DeviceState.RINGING),
        QueueCalls("Kolejka1", 1),
    ]
    texts = group_into_texts(events)
    assert texts == [
        {
            "subscriber": {"peer": "MojaCentrala-101", "statusValue": 8},
            "extstatus": {"exten": "101", "status": 8},
            "queue": {"peer": "Kolejka1", "calls": "1"},
        }
    ]


def test_group_never_puts_two_events_of_one_type_in_a_text() -> None:
    events: list[Event] = [
        ExtStatus("101", DeviceState.RINGING),
        Subscriber("MojaCentrala-101", DeviceState.RINGING),
        ExtStatus("102", DeviceState.IN_USE),
        ExtStatus("103", DeviceState.IDLE),
        Subscriber("MojaCentrala-103", DeviceState.IDLE),
    ]
    texts = group_into_texts(events)
    assert texts == [
        {
            "extstatus": {"exten": "101", "status": 8},
            "subscriber": {"peer": "MojaCentrala-101", "statusValue": 8},
        },
        {"extstatus": {"exten": "102", "status": 1}},
        {
            "extstatus": {"exten": "103", "status": 0},
            "subscriber": {"peer": "MojaCentrala-103", "statusValue": 0},
        },
    ]
    # Order is kept: flattening the texts gives the events back in order.
    flat = [(kind, value) for text in texts for kind, value in text.items()]
    assert flat == [(e.event_type, e.payload()) for e in events]


def test_group_of_nothing_is_nothing() -> None:
    assert group_into_texts([]) == []


def test_names() -> None:
    assert peer_name("MojaCentrala", "101") == "MojaCentrala-101"
    assert channel_name("MojaCentrala") == "pbx_MojaCentrala"
