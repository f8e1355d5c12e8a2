"""State values of the contract, with their names in English and in Polish.

The Polish names are the provider document's own (section 2.4 and 2.3.5).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Literal

Lang = Literal["en", "pl"]


class DeviceState(IntEnum):
    """`subscriber.statusValue` and `extstatus.status`."""

    IDLE = 0
    IN_USE = 1
    BUSY = 2
    UNAVAILABLE = 4
    RINGING = 8
    ON_HOLD = 16
    CONNECTING = 32

    def label(self, lang: Lang = "en") -> str:
        return _DEVICE[lang][self]


class MemberStatus(IntEnum):
    """`qmember.m_status`: the queue agent's device state."""

    UNKNOWN = 0
    IDLE = 1
    IN_USE = 2
    BUSY = 3
    INVALID = 4
    UNAVAILABLE = 5
    RINGING = 6
    RINGING_IN_USE = 7
    ON_HOLD = 8

    def label(self, lang: Lang = "en") -> str:
        return _MEMBER[lang][self]


class SmsStatus(StrEnum):
    """`smsSendResponse.status` and `/sendSMS`'s `responseStatus`."""

    NOT_FOUND = "NOT_FOUND"
    EXPIRED = "EXPIRED"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    UNDELIVERED = "UNDELIVERED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"
    QUEUE = "QUEUE"
    ACCEPTED = "ACCEPTED"
    RENEWAL = "RENEWAL"
    STOP = "STOP"

    @property
    def is_final(self) -> bool:
        """No later status follows a final one (the message is delivered, or never will be)."""
        return self not in (SmsStatus.QUEUE, SmsStatus.ACCEPTED, SmsStatus.RENEWAL, SmsStatus.SENT)

    def label(self, lang: Lang = "en") -> str:
        return _SMS[lang][self]


_DEVICE: dict[str, dict[DeviceState, str]] = {
    "en": {
        DeviceState.IDLE: "Idle",
        DeviceState.IN_USE: "In use",
        DeviceState.BUSY: "Busy",
        DeviceState.UNAVAILABLE: "Unavailable",
        DeviceState.RINGING: "Ringing",
        DeviceState.ON_HOLD: "On hold",
        DeviceState.CONNECTING: "Connecting",
    },
    "pl": {
        DeviceState.IDLE: "Wolny",
        DeviceState.IN_USE: "Rozmawia",
        DeviceState.BUSY: "Zajęty",
        DeviceState.UNAVAILABLE: "Niedostępny",
        DeviceState.RINGING: "Dzwoni",
        DeviceState.ON_HOLD: "Zawieszony",
        DeviceState.CONNECTING: "Łączenie",
    },
}

_MEMBER: dict[str, dict[MemberStatus, str]] = {
    "en": {
        MemberStatus.UNKNOWN: "Unknown",
        MemberStatus.IDLE: "Idle",
        MemberStatus.IN_USE: "In use",
        MemberStatus.BUSY: "Busy",
        MemberStatus.INVALID: "Invalid",
        MemberStatus.UNAVAILABLE: "Unavailable",
        MemberStatus.RINGING: "Ringing",
        MemberStatus.RINGING_IN_USE: "Ringing while in use",
        MemberStatus.ON_HOLD: "On hold",
    },
    "pl": {
        MemberStatus.UNKNOWN: "Nieznany",
        MemberStatus.IDLE: "Wolny",
        MemberStatus.IN_USE: "Rozmawia",
        MemberStatus.BUSY: "Zajęty",
        MemberStatus.INVALID: "Nieprawidłowy",
        MemberStatus.UNAVAILABLE: "Niedostępny",
        MemberStatus.RINGING: "Dzwoni",
        MemberStatus.RINGING_IN_USE: "Dzwoni przy zajętości",
        MemberStatus.ON_HOLD: "Zawieszony",
    },
}

_SMS: dict[str, dict[SmsStatus, str]] = {
    "en": {
        SmsStatus.NOT_FOUND: "Not found",
        SmsStatus.EXPIRED: "Expired",
        SmsStatus.SENT: "Sent",
        SmsStatus.DELIVERED: "Delivered",
        SmsStatus.UNDELIVERED: "Undelivered",
        SmsStatus.FAILED: "Failed",
        SmsStatus.REJECTED: "Rejected",
        SmsStatus.UNKNOWN: "Unknown",
        SmsStatus.QUEUE: "Queued",
        SmsStatus.ACCEPTED: "Accepted",
        SmsStatus.RENEWAL: "Retrying",
        SmsStatus.STOP: "Stopped",
    },
    "pl": {
        SmsStatus.NOT_FOUND: "Nieznaleziona",
        SmsStatus.EXPIRED: "Przedawniona",
        SmsStatus.SENT: "Wysłana",
        SmsStatus.DELIVERED: "Dostarczona",
        SmsStatus.UNDELIVERED: "Niedostarczona",
        SmsStatus.FAILED: "Nieudana",
        SmsStatus.REJECTED: "Odrzucona",
        SmsStatus.UNKNOWN: "Nieznany",
        SmsStatus.QUEUE: "Kolejka",
        SmsStatus.ACCEPTED: "Zaakceptowana",
        SmsStatus.RENEWAL: "Ponawianie",
        SmsStatus.STOP: "Zatrzymanie",
    },
}


def device_state(value: int) -> DeviceState | None:
    """The state for a `statusValue`, None for a value the contract does not define."""
    try:
        return DeviceState(value)
    except ValueError:
        return None


def member_status(value: int) -> MemberStatus | None:
    try:
        return MemberStatus(value)
    except ValueError:
        return None


def sms_status(value: str) -> SmsStatus | None:
    try:
        return SmsStatus(value)
    except ValueError:
        return None
