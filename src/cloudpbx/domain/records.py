"""Records the API serves: CDR rows, recordings, transcriptions, SMS messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudpbx.domain.states import Disposition, SmsStatus


@dataclass(frozen=True, slots=True)
class CdrRecord:
    """One billing record with Asterisk CDR semantics.

    `started_at` is an aware datetime (any zone); storage renders `calldate` in the PBX's
    zone. `cost` is in grosze, None when the call is not rated.
    """

    started_at: datetime
    clid: str
    src: str
    dst: str
    channel: str
    dstchannel: str
    lastapp: str
    duration: int
    billsec: int
    disposition: Disposition
    uniqueid: str
    cost: int | None = None
    zone: str = ""

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            raise ValueError("CdrRecord.started_at must be timezone-aware")
        if not 0 <= self.billsec <= self.duration:
            raise ValueError(
                f"billsec must be within 0..duration, got billsec={self.billsec} "
                f"duration={self.duration}"
            )


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """A stored call recording. `path` is relative to the recordings root of the PBX."""

    uniqueid: str
    started_at: datetime
    src: str
    dst: str
    format: str
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class TranscriptionRecord:
    """The text of a recorded call and its short summary."""

    uniqueid: str
    started_at: datetime
    src: str
    dst: str
    content: str
    summary: str


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """An SMS accepted by `/sendSMS`; `to` is international (`48XXXXXXXXX`)."""

    response_id: str
    to: str
    body: str
    test: bool
    status: SmsStatus
    parts: int
    cost: int | None
    created_at: datetime
