"""WebSocket messages and their events, as typed values.

A message is `{"id": N, "channel": "pbx_NAME", "text": {"<type>": {...}, ...}}`; each
property of `text` is one event. Every event type of the contract has its own class;
a type this client does not know becomes an :class:`UnknownEvent`, never dropped. Every
event keeps its JSON object in `raw`, unknown fields included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cloudpbx.client._exceptions import ProtocolError
from cloudpbx.client._models import as_int, as_str
from cloudpbx.client._states import (
    DeviceState,
    MemberStatus,
    SmsStatus,
    device_state,
    member_status,
    sms_status,
)


def extension(peer: str, pbx: str | None = None) -> str:
    """The extension number in a peer name: `MojaCentrala-101` → `101`.

    With `pbx`, its `NAME-` prefix is removed (what the provider's sample does); without,
    everything up to the last `-` is (PBX names may contain `-`, extensions do not). An
    interface (`SIP/MojaCentrala-101`, `qmember.m_location`) works too.
    """
    name = peer.rpartition("/")[2]
    if pbx is not None and name.startswith(f"{pbx}-"):
        return name[len(pbx) + 1 :]
    return name.rpartition("-")[2]


def channel_extension(channel: str, pbx: str | None = None) -> str:
    """The extension of an Asterisk channel: `SIP/MojaCentrala-101-0005f005` → `101`.

    A channel is an interface plus `-` and a unique suffix, which is dropped first.
    """
    interface, dash, _suffix = channel.rpartition("-")
    return extension(interface if dash else channel, pbx)


@dataclass(frozen=True, slots=True)
class SubscriberEvent:
    """State of a subscriber account (peer); `connect_peer_*` only for a call."""

    type: ClassVar[str] = "subscriber"
    peer: str
    status: int
    connect_peer_number: str | None
    connect_peer_name: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def state(self) -> DeviceState | None:
        return device_state(self.status)

    @property
    def extension(self) -> str:
        return extension(self.peer)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SubscriberEvent:
        number = raw.get("connectPeerNumber")
        name = raw.get("connectPeerName")
        return cls(
            peer=as_str(raw.get("peer")),
            status=as_int(raw.get("statusValue")),
            connect_peer_number=None if number is None else as_str(number),
            connect_peer_name=None if name is None else as_str(name),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class ExtStatusEvent:
    """State of a phone (extension hint)."""

    type: ClassVar[str] = "extstatus"
    exten: str
    status: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def state(self) -> DeviceState | None:
        return device_state(self.status)

    @property
    def extension(self) -> str:
        return self.exten

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ExtStatusEvent:
        return cls(exten=as_str(raw.get("exten")), status=as_int(raw.get("status")), raw=raw)


@dataclass(frozen=True, slots=True)
class QueueEvent:
    """The number of calls waiting in a queue changed (`queue` is the JSON's `peer`)."""

    type: ClassVar[str] = "queue"
    queue: str
    calls: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> QueueEvent:
        return cls(queue=as_str(raw.get("peer")), calls=as_int(raw.get("calls")), raw=raw)


@dataclass(frozen=True, slots=True)
class QueueMemberEvent:
    """State of an agent in a queue; `reason` only on pause changes."""

    type: ClassVar[str] = "qmember"
    peer: str
    queue: str
    status: int
    calls_taken: int
    membership: str
    paused: bool
    reason: str | None
    name: str
    location: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def state(self) -> MemberStatus | None:
        return member_status(self.status)

    @property
    def dynamic(self) -> bool:
        return self.membership == "dynamic"

    @property
    def extension(self) -> str:
        return extension(self.peer)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> QueueMemberEvent:
        reason = raw.get("m_reason")
        return cls(
            peer=as_str(raw.get("peer")),
            queue=as_str(raw.get("queue")),
            status=as_int(raw.get("m_status")),
            calls_taken=as_int(raw.get("m_ct")),
            membership=as_str(raw.get("m_mbshp")),
            paused=as_str(raw.get("m_paused")) in ("1", "true", "True"),
            reason=None if reason is None else as_str(reason),
            name=as_str(raw.get("m_name")),
            location=as_str(raw.get("m_location")),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class ConferenceMemberEvent:
    """Somebody joined (`add`) or left (`remove`) a conference room."""

    type: ClassVar[str] = "cmember"
    channel: str
    action: str
    conference: str
    caller_id_name: str
    caller_id_num: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def joined(self) -> bool:
        return self.action == "add"

    @property
    def extension(self) -> str:
        return channel_extension(self.channel)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ConferenceMemberEvent:
        return cls(
            channel=as_str(raw.get("channel")),
            action=as_str(raw.get("action")),
            conference=as_str(raw.get("conference")),
            caller_id_name=as_str(raw.get("callerIDName")),
            caller_id_num=as_str(raw.get("callerIDNum")),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class SmsStatusEvent:
    """An SMS changed status (`smsSendResponse`); `msg_id` is `/sendSMS`'s `responseId`."""

    type: ClassVar[str] = "smsSendResponse"
    msg_id: str
    to: str
    status: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def sms_status(self) -> SmsStatus | None:
        return sms_status(self.status)

    @property
    def is_final(self) -> bool:
        known = self.sms_status
        return known is not None and known.is_final

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SmsStatusEvent:
        return cls(
            msg_id=as_str(raw.get("MsgId")),
            to=as_str(raw.get("to")),
            status=as_str(raw.get("status")),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event type this client does not know, passed through as it came."""

    event_type: str
    raw: Mapping[str, Any] = field(compare=False)

    @property
    def type(self) -> str:
        return self.event_type


Event = (
    SubscriberEvent
    | ExtStatusEvent
    | QueueEvent
    | QueueMemberEvent
    | ConferenceMemberEvent
    | SmsStatusEvent
    | UnknownEvent
)

_KNOWN: dict[str, Any] = {
    cls.type: cls
    for cls in (
        SubscriberEvent,
        ExtStatusEvent,
        QueueEvent,
        QueueMemberEvent,
        ConferenceMemberEvent,
        SmsStatusEvent,
    )
}


def parse_event(event_type: str, data: object) -> Event:
    """One property of a message's `text` as its typed event."""
    raw: Mapping[str, Any] = data if isinstance(data, Mapping) else {"value": data}
    cls = _KNOWN.get(event_type)
    if cls is None or not isinstance(data, Mapping):
        return UnknownEvent(event_type, raw)
    event: Event = cls.from_json(raw)
    return event


@dataclass(frozen=True, slots=True)
class Message:
    """One WebSocket message: its id, channel and the events of its `text`, in order."""

    id: int
    channel: str
    events: tuple[Event, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)


def parse_message(data: str | bytes) -> Message:
    """A message as the server sent it; ProtocolError when it is not one.

    `text` is normally an object; a JSON string holding an object is accepted too.
    """
    try:
        decoded = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"a WebSocket message is not JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise ProtocolError("a WebSocket message is not a JSON object")
    message_id = decoded.get("id")
    if isinstance(message_id, str) and message_id.isdigit():
        message_id = int(message_id)
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ProtocolError(f"a WebSocket message has no integer id: {decoded.get('id')!r}")
    text = decoded.get("text")
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError:
            raise ProtocolError("a WebSocket message's text is not a JSON object") from None
    if not isinstance(text, dict):
        raise ProtocolError("a WebSocket message has no `text` object")
    events = tuple(parse_event(str(key), value) for key, value in text.items())
    return Message(message_id, as_str(decoded.get("channel")), events, decoded)
