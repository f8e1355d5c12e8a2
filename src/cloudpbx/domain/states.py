"""State values of the contract (section 2.4 of the provider's document)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class DeviceState(IntEnum):
    """`subscriber.statusValue` and `extstatus.status`.

    Asterisk can report combined states (In Use + Ringing, In Use + On Hold); the API carries
    one value, so combinations are reduced by :func:`reduce_device_state`.
    """

    IDLE = 0
    IN_USE = 1
    BUSY = 2
    UNAVAILABLE = 4
    RINGING = 8
    ON_HOLD = 16
    CONNECTING = 32


def extension_status(device: DeviceState) -> DeviceState:
    """`extstatus.status` for a phone in `device` state, as Asterisk's ExtensionStatus says it.

    Connecting (32) is a device state we derive for `subscriber` only (CONTRACT.md): Asterisk's
    extension states have no such value, and a hint whose phone is placing a call that the
    other side has not answered yet reads In Use (the lab's `originate` transcript).
    """
    return DeviceState.IN_USE if device is DeviceState.CONNECTING else device


def reduce_device_state(bits: int) -> DeviceState:
    """Reduce an Asterisk combined extension-state bitmask to one contract value.

    Decision (docs/decisions.md): ringing wins over in-use (a wallboard must show the
    ringing), hold wins over in-use, a removed/deleted hint (-1/-2) is Unavailable.
    """
    if bits < 0:
        return DeviceState.UNAVAILABLE
    for state in (
        DeviceState.CONNECTING,
        DeviceState.RINGING,
        DeviceState.ON_HOLD,
        DeviceState.UNAVAILABLE,
        DeviceState.BUSY,
        DeviceState.IN_USE,
    ):
        if bits & state:
            return state
    return DeviceState.IDLE


class MemberStatus(IntEnum):
    """`qmember.m_status`: Asterisk's device state of a queue member."""

    UNKNOWN = 0
    IDLE = 1
    IN_USE = 2
    BUSY = 3
    INVALID = 4
    UNAVAILABLE = 5
    RINGING = 6
    RINGING_IN_USE = 7
    ON_HOLD = 8


class SmsStatus(StrEnum):
    """SMS delivery statuses, the same names as the SMSAPI.pl gateway's (codes 401-412)."""

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
        """A final status is never replaced by a later report (a late SENT after DELIVERED)."""
        return self in _FINAL_SMS

    @property
    def rank(self) -> int:
        """Progress order, so that out-of-order reports never move a message backwards."""
        return _SMS_RANK[self]


_FINAL_SMS = frozenset(
    {
        SmsStatus.NOT_FOUND,
        SmsStatus.EXPIRED,
        SmsStatus.DELIVERED,
        SmsStatus.UNDELIVERED,
        SmsStatus.FAILED,
        SmsStatus.REJECTED,
        SmsStatus.UNKNOWN,
        SmsStatus.STOP,
    }
)

_SMS_RANK = {
    SmsStatus.QUEUE: 0,
    SmsStatus.ACCEPTED: 1,
    SmsStatus.RENEWAL: 2,
    SmsStatus.SENT: 3,
    **{status: 4 for status in _FINAL_SMS},
}


class Disposition(StrEnum):
    """Final state of a call in a CDR row."""

    ANSWERED = "ANSWERED"
    NO_ANSWER = "NO ANSWER"
    BUSY = "BUSY"
    FAILED = "FAILED"
