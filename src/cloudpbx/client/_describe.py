"""One line of plain language per event, in English or Polish."""

from __future__ import annotations

import json

from cloudpbx.client._events import (
    ConferenceMemberEvent,
    Event,
    ExtStatusEvent,
    QueueEvent,
    QueueMemberEvent,
    SmsStatusEvent,
    SubscriberEvent,
    UnknownEvent,
    channel_extension,
    extension,
)
from cloudpbx.client._states import Lang, device_state, member_status, sms_status

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "unknown": "unknown",
        "phone": "phone",
        "queue_calls": "queue {queue}: {calls} waiting",
        "agent": "agent {ext} ({name}) in {queue}: {state}",
        "paused": "paused",
        "taken": "{count} calls taken",
        "joined": "{who} joined conference {room}",
        "left": "{who} left conference {room}",
        "sms": "SMS {id} to {to}: {status}",
    },
    "pl": {
        "unknown": "nieznany",
        "phone": "aparat",
        "queue_calls": "kolejka {queue}: oczekujących {calls}",
        "agent": "agent {ext} ({name}) w kolejce {queue}: {state}",
        "paused": "pauza",
        "taken": "odebrane: {count}",
        "joined": "{who} dołączył(a) do konferencji {room}",
        "left": "{who} opuścił(a) konferencję {room}",
        "sms": "SMS {id} do {to}: {status}",
    },
}


def device_label(status: int, lang: Lang = "en") -> str:
    """`statusValue`/`status` in words; a value outside the contract as `unknown (N)`."""
    state = device_state(status)
    return state.label(lang) if state is not None else f"{_WORDS[lang]['unknown']} ({status})"


def member_label(status: int, lang: Lang = "en") -> str:
    """`m_status` in words."""
    state = member_status(status)
    return state.label(lang) if state is not None else f"{_WORDS[lang]['unknown']} ({status})"


def sms_label(status: str, lang: Lang = "en") -> str:
    """An SMS status name in words (unknown names are shown as they came)."""
    known = sms_status(status)
    return known.label(lang) if known is not None else status


def describe(event: Event, lang: Lang = "en", pbx: str | None = None) -> str:
    """The event in one line, e.g. `101: Ringing ← 600100200 (Jan Nowak)`."""
    words = _WORDS[lang]
    match event:
        case SubscriberEvent():
            line = f"{extension(event.peer, pbx)}: {device_label(event.status, lang)}"
            if event.connect_peer_number is not None:
                line += f" ↔ {event.connect_peer_number}"
                if event.connect_peer_name:
                    line += f" ({event.connect_peer_name})"
            return line
        case ExtStatusEvent():
            return f"{words['phone']} {event.exten}: {device_label(event.status, lang)}"
        case QueueEvent():
            return words["queue_calls"].format(queue=event.queue, calls=event.calls)
        case QueueMemberEvent():
            line = words["agent"].format(
                ext=extension(event.peer, pbx),
                name=event.name or "-",
                queue=event.queue,
                state=member_label(event.status, lang),
            )
            if event.paused:
                line += f", {words['paused']}"
                if event.reason:
                    line += f" ({event.reason})"
            return line + ", " + words["taken"].format(count=event.calls_taken)
        case ConferenceMemberEvent():
            number = event.caller_id_num or channel_extension(event.channel, pbx)
            who = f"{event.caller_id_name} <{number}>" if event.caller_id_name else number
            key = "joined" if event.joined else "left"
            return words[key].format(who=who, room=event.conference)
        case SmsStatusEvent():
            return words["sms"].format(
                id=event.msg_id, to=event.to, status=sms_label(event.status, lang)
            )
        case UnknownEvent():
            return json.dumps(dict(event.raw), ensure_ascii=False)
