"""`Event: Cdr` (cdr_manager) → `CdrRecord`, with a small tariff for outside calls. No I/O.

Fields (the event's names → the contract's CDR row; the same columns cdr_csv writes):
`CallerID` → clid, `Source` → src, `Destination` → dst, `Channel` → channel,
`DestinationChannel` → dstchannel, `LastApplication` → lastapp, `Duration` → duration,
`BillableSeconds` → billsec, `Disposition` → disposition, `UniqueID` → uniqueid,
`StartTime` → started_at. Asterisk writes `StartTime` in its own local time without a
zone, so the converter is told the Asterisk server's time zone.

Things the lab showed (tests/data/ami/*.cdr.csv): one uniqueid can have two rows (a
failed Dial, then the rest of the originated leg, `lastapp Hangup`); an unanswered call
has an empty `AnswerTime`; the conference's first row carries the second participant as
`dstchannel`.

Rating: only calls to outside numbers have a cost and zone; internal calls (extensions,
queues, rooms) get `cost=None`, `zone=""`. A `Rating` is any callable
`(dialled number, billsec) -> Rate | None`; `RatingTable` is the built-in one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Protocol

from cloudpbx.adapters.asterisk.framing import AmiMessage
from cloudpbx.adapters.asterisk.tenancy import TenantMap
from cloudpbx.domain.records import CdrRecord
from cloudpbx.domain.states import Disposition

__all__ = ["CdrConverter", "CdrError", "Rate", "Rating", "RatingTable", "Tariff", "cdr_record"]

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

DISPOSITIONS: dict[str, Disposition] = {
    "ANSWERED": Disposition.ANSWERED,
    "NO ANSWER": Disposition.NO_ANSWER,
    "BUSY": Disposition.BUSY,
    "FAILED": Disposition.FAILED,
    "CONGESTION": Disposition.FAILED,
}
"""Asterisk's dispositions → the contract's four (`CONGESTION`, from `congestion=yes`,
counts as FAILED; anything unknown too)."""


class CdrError(ValueError):
    """An `Event: Cdr` that cannot be a CDR row (missing or malformed field)."""


@dataclass(frozen=True, slots=True)
class Rate:
    """What a call costs (grosze) and its billing zone."""

    zone: str
    cost: int


class Rating(Protocol):
    """Rates an outside call: the dialled number and the billable seconds."""

    def __call__(self, number: str, billsec: int) -> Rate | None: ...


@dataclass(frozen=True, slots=True)
class Tariff:
    """A billing zone and its price per started minute, in grosze."""

    zone: str
    per_minute: int

    def cost(self, billsec: int) -> int:
        """Every started minute is paid in full; an unanswered call costs 0."""
        return self.per_minute * math.ceil(max(billsec, 0) / 60)


class RatingTable:
    """Number prefix → tariff; the longest matching prefix wins.

    Numbers are the digits the PBX dialled (a leading `+` is ignored). Numbers shorter
    than `min_digits` are internal (extensions, queues, rooms) and never rated, nor are
    numbers no prefix matches.
    """

    def __init__(self, tariffs: Mapping[str, Tariff], *, min_digits: int = 7) -> None:
        for prefix in tariffs:
            if not prefix.isdigit():
                raise ValueError(f"tariff prefix must be digits: {prefix!r}")
        self._tariffs = dict(tariffs)
        self._lengths = sorted({len(p) for p in self._tariffs}, reverse=True)
        self.min_digits = min_digits

    def tariff(self, number: str) -> Tariff | None:
        digits = number[1:] if number.startswith("+") else number
        if len(digits) < self.min_digits or not digits.isdigit():
            return None
        for length in self._lengths:
            tariff = self._tariffs.get(digits[:length])
            if tariff is not None:
                return tariff
        return None

    def __call__(self, number: str, billsec: int) -> Rate | None:
        tariff = self.tariff(number)
        if tariff is None:
            return None
        return Rate(tariff.zone, tariff.cost(billsec))


def cdr_record(msg: AmiMessage, *, asterisk_tz: tzinfo, rating: Rating | None = None) -> CdrRecord:
    """Convert one `Event: Cdr`; `asterisk_tz` is the zone Asterisk writes times in."""
    start = msg.value("StartTime")
    try:
        started_at = datetime.strptime(start, _TIME_FORMAT).replace(tzinfo=asterisk_tz)
    except ValueError:
        raise CdrError(f"Cdr StartTime is not {_TIME_FORMAT!r}: {start!r}") from None
    duration = _seconds(msg, "Duration")
    billsec = _seconds(msg, "BillableSeconds")
    uniqueid = msg.value("UniqueID")
    if not uniqueid:
        raise CdrError("Cdr without UniqueID")
    dst = msg.value("Destination")
    rate = rating(dst, billsec) if rating is not None else None
    try:
        return CdrRecord(
            started_at=started_at,
            clid=msg.value("CallerID"),
            src=msg.value("Source"),
            dst=dst,
            channel=msg.value("Channel"),
            dstchannel=msg.value("DestinationChannel"),
            lastapp=msg.value("LastApplication"),
            duration=duration,
            billsec=billsec,
            disposition=DISPOSITIONS.get(msg.value("Disposition"), Disposition.FAILED),
            uniqueid=uniqueid,
            cost=None if rate is None else rate.cost,
            zone="" if rate is None else rate.zone,
        )
    except ValueError as exc:
        raise CdrError(str(exc)) from exc


def _seconds(msg: AmiMessage, name: str) -> int:
    text = msg.value(name)
    if not text.isdigit():
        raise CdrError(f"Cdr {name} is not a number of seconds: {text!r}")
    return int(text)


class CdrConverter:
    """`Event: Cdr` → `(pbx, CdrRecord)` for the PBXes of a `TenantMap`.

    The PBX is the one whose account code the record carries, else the one of the
    calling channel's endpoint, else the one of `DestinationContext`. Records of no
    known PBX, or whose account code and channel name two different PBXes, give None.
    """

    def __init__(
        self, tenants: TenantMap, *, asterisk_tz: tzinfo, rating: Rating | None = None
    ) -> None:
        self.tenants = tenants
        self.asterisk_tz = asterisk_tz
        self.rating = rating

    def pbx_of(self, msg: AmiMessage) -> str | None:
        by_account = self.tenants.account(msg.value("AccountCode"))
        channel = self.tenants.channel(msg.value("Channel"))
        by_channel = None if channel is None else channel.pbx
        if by_account is not None and by_channel is not None and by_account != by_channel:
            return None
        if by_account is not None:
            return by_account
        if by_channel is not None:
            return by_channel
        return self.tenants.context(msg.value("DestinationContext"))

    def convert(self, msg: AmiMessage) -> tuple[str, CdrRecord] | None:
        """The record and its PBX; None for other events and records of no known PBX.

        Raises CdrError for a Cdr event that cannot be read.
        """
        if msg.event != "Cdr":
            return None
        pbx = self.pbx_of(msg)
        if pbx is None:
            return None
        return pbx, cdr_record(msg, asterisk_tz=self.asterisk_tz, rating=self.rating)
