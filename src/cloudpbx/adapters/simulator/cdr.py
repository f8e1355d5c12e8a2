"""Asterisk-shaped call records: channel names, unique ids, caller ids and CDR rows.

Asterisk numbers every channel it creates from one counter: the channel name ends in the
counter as 8 hex digits (`SIP/MojaCentrala-101-0000002a`) and the channel's uniqueid is
`<creation epoch>.<counter>` (`1795838273.42`). A call's CDR carries the uniqueid of its
originating channel. The simulator keeps one counter per PBX for the life of the backend
(history backfill included), so unique ids never repeat within a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudpbx.adapters.simulator.rating import zone_of
from cloudpbx.domain.records import CdrRecord
from cloudpbx.domain.states import Disposition


class ChannelCounter:
    """The PBX-wide channel sequence (Asterisk's `uniqueint`)."""

    def __init__(self) -> None:
        self._next = 0

    def take(self) -> int:
        value = self._next
        self._next += 1
        return value


@dataclass(frozen=True, slots=True)
class Channel:
    """A created channel: its name and the uniqueid Asterisk gave it."""

    name: str
    uniqueid: str


def open_channel(counter: ChannelCounter, endpoint: str, created: datetime) -> Channel:
    """A new channel of `endpoint` created at `created`: `SIP/<endpoint>-<8 hex digits>`."""
    seq = counter.take()
    return Channel(f"SIP/{endpoint}-{seq:08x}", f"{int(created.timestamp())}.{seq}")


def caller_id(name: str, number: str) -> str:
    """The CDR `clid` field: `"Anna Kowalska" <101>`."""
    return f'"{name}" <{number}>'


@dataclass(slots=True)
class CallLog:
    """What the CDR engine notes while a call runs; becomes one row when it ends.

    Times are virtual seconds of the engine (see `engine.Engine`), so `duration` and
    `billsec` are the call's own lengths whatever the simulation speed.
    """

    started_at: datetime
    begin: float
    clid: str
    src: str
    dst: str
    channel: Channel
    lastapp: str
    rated: bool = False
    dstchannel: str = ""
    answer: float | None = None

    def finish(self, end: float, disposition: Disposition) -> CdrRecord:
        """The row for a call that ended at virtual time `end` with `disposition`."""
        duration = int(max(end - self.begin, 0.0))
        billsec = 0
        if disposition is Disposition.ANSWERED and self.answer is not None:
            billsec = min(int(max(end - self.answer, 0.0)), duration)
        cost: int | None = None
        zone = ""
        if self.rated and (tariff := zone_of(self.dst)) is not None:
            cost, zone = tariff.cost(billsec), tariff.name
        return CdrRecord(
            started_at=self.started_at,
            clid=self.clid,
            src=self.src,
            dst=self.dst,
            channel=self.channel.name,
            dstchannel=self.dstchannel,
            lastapp=self.lastapp,
            duration=duration,
            billsec=billsec,
            disposition=disposition,
            uniqueid=self.channel.uniqueid,
            cost=cost,
            zone=zone,
        )
