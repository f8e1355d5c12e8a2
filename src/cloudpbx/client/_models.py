"""Typed results of the REST endpoints.

Every result keeps the object exactly as the server sent it in `raw` (unknown fields
included; `extra` lists only those), so nothing a newer server adds is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from cloudpbx.client._dates import parse_timestamp
from cloudpbx.client._exceptions import ProtocolError
from cloudpbx.client._states import SmsStatus, sms_status

T = TypeVar("T")


class Page(list[T], Generic[T]):
    """A list endpoint's rows, oldest first, with what the server said about the cap.

    `total` is `X-Total-Count` (None when the server does not send it); `truncated` is
    True when the server returned only the first rows of more (`X-Truncated: true`).
    """

    def __init__(self, rows: Iterable[T] = (), *, total: int | None, truncated: bool) -> None:
        super().__init__(rows)
        self.total = total
        self.truncated = truncated


def _extra(raw: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in raw.items() if key not in known}


def as_str(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def as_int(value: object, default: int = 0) -> int:
    """Ints as the contract types them; numeric strings from lenient servers too."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str | float):
        try:
            return int(value)
        except ValueError:
            return default
    return default


def _cost(value: object) -> int | None:
    """Grosze; `""` (not rated), absent or unreadable → None (`raw` keeps the original)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _timestamp(raw: Mapping[str, Any], key: str, what: str) -> datetime:
    try:
        return parse_timestamp(raw.get(key))
    except ValueError:
        raise ProtocolError(f"{what} has no valid {key!r}: {raw.get(key)!r}") from None


def _object(raw: object, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ProtocolError(f"expected a JSON object for {what}, got {type(raw).__name__}")
    return raw


_CDR_FIELDS = frozenset(
    {
        "calldate",
        "clid",
        "src",
        "dst",
        "channel",
        "dstchannel",
        "lastapp",
        "duration",
        "billsec",
        "disposition",
        "uniqueid",
        "cost",
        "zone",
    }
)


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One billing record (Asterisk CDR semantics).

    `calldate` is the call's start in the PBX's local time (naive). `cost` is in grosze,
    None when the call is not rated (the server's `""`). `uniqueid` is the call id, or the
    SMS's `responseId` for an SMS.
    """

    calldate: datetime
    clid: str
    src: str
    dst: str
    channel: str
    dstchannel: str
    lastapp: str
    duration: int
    billsec: int
    disposition: str
    uniqueid: str
    cost: int | None
    zone: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def extra(self) -> dict[str, Any]:
        """Fields the contract does not name."""
        return _extra(self.raw, _CDR_FIELDS)

    @classmethod
    def from_json(cls, data: object) -> CdrRow:
        raw = _object(data, "a CDR row")
        return cls(
            calldate=_timestamp(raw, "calldate", "a CDR row"),
            clid=as_str(raw.get("clid")),
            src=as_str(raw.get("src")),
            dst=as_str(raw.get("dst")),
            channel=as_str(raw.get("channel")),
            dstchannel=as_str(raw.get("dstchannel")),
            lastapp=as_str(raw.get("lastapp")),
            duration=as_int(raw.get("duration")),
            billsec=as_int(raw.get("billsec")),
            disposition=as_str(raw.get("disposition")),
            uniqueid=as_str(raw.get("uniqueid")),
            cost=_cost(raw.get("cost")),
            zone=as_str(raw.get("zone")),
            raw=raw,
        )


_RECORDING_FIELDS = frozenset({"uniqueid", "src", "dst", "format", "date"})


@dataclass(frozen=True, slots=True)
class Recording:
    """A recorded call: download it with `download_recording(uniqueid, ...)`."""

    uniqueid: str
    src: str
    dst: str
    format: str
    date: datetime
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def extra(self) -> dict[str, Any]:
        return _extra(self.raw, _RECORDING_FIELDS)

    @property
    def filename(self) -> str:
        """`{uniqueid}.{format}`, the name the provider's sample client saves it under."""
        return f"{self.uniqueid}.{self.format}" if self.format else self.uniqueid

    @classmethod
    def from_json(cls, data: object) -> Recording:
        raw = _object(data, "a recording")
        return cls(
            uniqueid=as_str(raw.get("uniqueid")),
            src=as_str(raw.get("src")),
            dst=as_str(raw.get("dst")),
            format=as_str(raw.get("format")),
            date=_timestamp(raw, "date", "a recording"),
            raw=raw,
        )


_TRANSCRIPTION_ITEM_FIELDS = frozenset({"uniqueid", "calldate", "src", "dst"})


@dataclass(frozen=True, slots=True)
class TranscriptionItem:
    """A call with a finished transcription; its text is `transcription(uniqueid)`."""

    uniqueid: str
    calldate: datetime
    src: str
    dst: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def extra(self) -> dict[str, Any]:
        return _extra(self.raw, _TRANSCRIPTION_ITEM_FIELDS)

    @classmethod
    def from_json(cls, data: object) -> TranscriptionItem:
        raw = _object(data, "a transcription list item")
        return cls(
            uniqueid=as_str(raw.get("uniqueid")),
            calldate=_timestamp(raw, "calldate", "a transcription list item"),
            src=as_str(raw.get("src")),
            dst=as_str(raw.get("dst")),
            raw=raw,
        )


_TRANSCRIPTION_FIELDS = frozenset({"uniqueid", "content", "summary"})


@dataclass(frozen=True, slots=True)
class Transcription:
    """The text of a call (`content`) and its short `summary`."""

    uniqueid: str
    content: str
    summary: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def extra(self) -> dict[str, Any]:
        return _extra(self.raw, _TRANSCRIPTION_FIELDS)

    @classmethod
    def from_json(cls, data: object) -> Transcription:
        raw = _object(data, "a transcription")
        return cls(
            uniqueid=as_str(raw.get("uniqueid")),
            content=as_str(raw.get("content")),
            summary=as_str(raw.get("summary")),
            raw=raw,
        )


_SMS_FIELDS = frozenset({"responseId", "responseStatus", "responseErrorMessage"})


@dataclass(frozen=True, slots=True)
class SmsResponse:
    """`/sendSMS`'s answer. `response_id` is the SMS's CDR `uniqueid` and the `MsgId` of
    its later `smsSendResponse` events."""

    response_id: str
    response_status: str
    response_error_message: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def status(self) -> SmsStatus | None:
        """`response_status` as a known status (None for a name the contract lacks)."""
        return sms_status(self.response_status)

    @property
    def extra(self) -> dict[str, Any]:
        return _extra(self.raw, _SMS_FIELDS)

    @classmethod
    def from_json(cls, data: object) -> SmsResponse:
        raw = _object(data, "the /sendSMS answer")
        error = raw.get("responseErrorMessage")
        return cls(
            response_id=as_str(raw.get("responseId")),
            response_status=as_str(raw.get("responseStatus")),
            response_error_message=None if error is None else as_str(error),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class DialResult:
    """`/dial` answered `OK`: the PBX accepted the call and rings `cpa` first.

    `originate_id` is the server's `X-Originate-Id` header when it sends one.
    """

    originate_id: str | None


@dataclass(frozen=True, slots=True)
class Download:
    """A finished download.

    `path` is the saved file (None when written to a file object); `size` the bytes of
    the whole recording; `resumed_from` how many were already there (0: a full download).
    """

    uniqueid: str
    path: Path | None
    size: int
    resumed_from: int
    content_type: str
