"""The WebSocket events of the contract, as typed values.

An event knows its contract type name and how to become the JSON object the contract shows
(field names and field types exactly as documented: some counts are strings, some ints).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from cloudpbx.domain.states import DeviceState, MemberStatus, SmsStatus


class Event(Protocol):
    """Anything that can travel inside a message's `text` object."""

    event_type: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        """The event's JSON object, with the contract's field names and types."""
        ...


@dataclass(frozen=True, slots=True)
class Subscriber:
    """State of a subscriber account (peer); `connect_*` only when it describes a call."""

    event_type: ClassVar[str] = "subscriber"
    peer: str
    status: DeviceState
    connect_peer_number: str | None = None
    connect_peer_name: str | None = None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {"peer": self.peer, "statusValue": int(self.status)}
        if self.connect_peer_number is not None:
            data["connectPeerNumber"] = self.connect_peer_number
            data["connectPeerName"] = self.connect_peer_name or ""
        return data


@dataclass(frozen=True, slots=True)
class ExtStatus:
    """State of a phone (extension hint)."""

    event_type: ClassVar[str] = "extstatus"
    exten: str
    status: DeviceState

    def payload(self) -> dict[str, Any]:
        return {"exten": self.exten, "status": int(self.status)}


@dataclass(frozen=True, slots=True)
class QueueCalls:
    """Number of calls waiting in a queue changed."""

    event_type: ClassVar[str] = "queue"
    queue: str
    calls: int

    def payload(self) -> dict[str, Any]:
        return {"peer": self.queue, "calls": str(self.calls)}


@dataclass(frozen=True, slots=True)
class QueueMember:
    """State of an agent in a queue; `reason` only on pause changes."""

    event_type: ClassVar[str] = "qmember"
    peer: str
    queue: str
    status: MemberStatus
    calls_taken: int
    dynamic: bool
    paused: bool
    name: str
    location: str
    reason: str | None = None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "peer": self.peer,
            "queue": self.queue,
            "m_status": str(int(self.status)),
            "m_ct": str(self.calls_taken),
            "m_mbshp": "dynamic" if self.dynamic else "static",
            "m_paused": "1" if self.paused else "0",
        }
        if self.reason is not None:
            data["m_reason"] = self.reason
        data["m_name"] = self.name
        data["m_location"] = self.location
        return data


@dataclass(frozen=True, slots=True)
class ConferenceMember:
    """Somebody joined (`add`) or left (`remove`) a conference room."""

    event_type: ClassVar[str] = "cmember"
    channel: str
    action: Literal["add", "remove"]
    conference: str
    caller_id_name: str
    caller_id_num: str

    def payload(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "action": self.action,
            "conference": self.conference,
            "callerIDName": self.caller_id_name,
            "callerIDNum": self.caller_id_num,
        }


@dataclass(frozen=True, slots=True)
class SmsSendResponse:
    """An SMS changed status; `to` in international form `48XXXXXXXXX`."""

    event_type: ClassVar[str] = "smsSendResponse"
    msg_id: str
    to: str
    status: SmsStatus

    def payload(self) -> dict[str, Any]:
        return {"MsgId": self.msg_id, "to": self.to, "status": self.status.value}


def group_into_texts(events: Iterable[Event]) -> list[dict[str, Any]]:
    """Pack events that belong to one change into as few `text` objects as possible.

    The contract lets one message carry several events keyed by type, but two events of
    the same type never share a message: a repeated type starts a new message. Order is
    kept, so a client applying messages in id order sees the events in causal order.
    """
    texts: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for event in events:
        if event.event_type in current:
            texts.append(current)
            current = {}
        current[event.event_type] = event.payload()
    if current:
        texts.append(current)
    return texts


def peer_name(pbx: str, extension: str) -> str:
    """`MojaCentrala` + `101` → `MojaCentrala-101`, the contract's peer naming."""
    return f"{pbx}-{extension}"


def channel_name(pbx: str) -> str:
    """The WebSocket channel of a PBX: `pbx_MojaCentrala`."""
    return f"pbx_{pbx}"


EventBatch = Sequence[Event]
