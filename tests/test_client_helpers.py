"""Seeding and instrumentation shared by the client tests (this module has no tests).

The tests run the client against the real server of `tests.live`; these helpers put data
into that server's stores, add a small PBX backend for `/dial`, and wrap httpx transports
to count requests or to break a transfer half-way (faults on the wire, not fake answers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from cloudpbx.client import RetryPolicy
from cloudpbx.domain.records import CdrRecord, RecordingInfo, TranscriptionRecord
from cloudpbx.domain.states import Disposition, SmsStatus
from cloudpbx.ports.pbx import OriginateResult, PbxSink
from cloudpbx.ports.sms import OutgoingSms, SmsStatusSink, SubmitResult
from tests.live import LiveServer

FAST = RetryPolicy(attempts=2, initial=0.01, factor=2.0, maximum=0.05, jitter=0.0)
"""Retries that keep tests quick."""


def at(day: str, time: str = "12:00:00") -> datetime:
    """A UTC moment; noon UTC is the same day in Europe/Warsaw."""
    return datetime.fromisoformat(f"{day}T{time}+00:00").astimezone(UTC)


def cdr_record(uniqueid: str, started_at: datetime, **overrides: Any) -> CdrRecord:
    values: dict[str, Any] = {
        "started_at": started_at,
        "clid": '"Jan Nowak" <101>',
        "src": "101",
        "dst": "600100200",
        "channel": "SIP/MojaCentrala-101-00000001",
        "dstchannel": "SIP/trunk-00000002",
        "lastapp": "Dial",
        "duration": 30,
        "billsec": 25,
        "disposition": Disposition.ANSWERED,
        "uniqueid": uniqueid,
        "cost": 12,
        "zone": "mobile",
    }
    values.update(overrides)
    return CdrRecord(**values)


async def add_cdrs(server: LiveServer, pbx: str, records: list[CdrRecord]) -> None:
    tenant = await server.runtime.tenants.require(pbx)
    await server.runtime.calls.add_cdrs(tenant, records)


async def add_recording(
    server: LiveServer,
    pbx: str,
    uniqueid: str,
    data: bytes,
    started_at: datetime,
    fmt: str = "wav",
) -> None:
    folder = server.runtime.ingest.recordings_dir(pbx)
    name = f"{uniqueid}.{fmt}"
    (folder / name).write_bytes(data)
    tenant = await server.runtime.tenants.require(pbx)
    info = RecordingInfo(uniqueid, started_at, "101", "600100200", fmt, name, len(data))
    await server.runtime.calls.add_recording(tenant, info)


async def add_transcription(
    server: LiveServer, pbx: str, uniqueid: str, started_at: datetime, content: str, summary: str
) -> None:
    tenant = await server.runtime.tenants.require(pbx)
    record = TranscriptionRecord(uniqueid, started_at, "101", "102", content, summary)
    await server.runtime.calls.add_transcription(tenant, record)


def audio(size: int) -> bytes:
    """Recognisable bytes: any misplaced range shows up as a mismatch."""
    return bytes((i * 7 + i // 256) % 256 for i in range(size))


@dataclass
class DialBackend:
    """A PBX backend (the real port) that serves one PBX: extensions 100-199; it accepts
    every call except to 666, and remembers what it was asked."""

    pbx: str
    calls: list[tuple[str, str]] = field(default_factory=list)

    def serves(self, pbx: str) -> bool:
        return pbx == self.pbx

    async def start(self, sink: PbxSink) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def originate(self, pbx: str, cpa: str, cpb: str) -> OriginateResult:
        self.calls.append((cpa, cpb))
        if cpb == "666":
            return OriginateResult(False, reference=f"orig-{len(self.calls)}", message="busy")
        return OriginateResult(True, reference=f"orig-{len(self.calls)}")

    def is_extension(self, pbx: str, number: str) -> bool:
        return number.isdigit() and 100 <= int(number) <= 199


class FailingSmsGateway:
    """An SMS gateway (the real port) whose operator is down."""

    async def start(self, sink: SmsStatusSink) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, message: OutgoingSms) -> SubmitResult:
        return SubmitResult(None, SmsStatus.FAILED, error="operator unreachable")


class CountingTransport(httpx.BaseTransport):
    """Counts requests; fails the first `fail` of them as if the connection was refused."""

    def __init__(self, fail: int = 0) -> None:
        self._inner = httpx.HTTPTransport()
        self.fail = fail
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= self.fail:
            raise httpx.ConnectError("connection refused (injected)", request=request)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class _CutStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self._inner:
            if sent + len(chunk) > self._limit:
                yield chunk[: self._limit - sent]
                raise httpx.ReadError("connection reset (injected)")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class CuttingTransport(httpx.BaseTransport):
    """Breaks the body of the first response after `limit` bytes, like a dropped link."""

    def __init__(self, limit: int) -> None:
        self._inner = httpx.HTTPTransport()
        self._limit = limit
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self._inner.handle_request(request)
        if len(self.requests) == 1:
            assert isinstance(response.stream, httpx.SyncByteStream)
            response.stream = _CutStream(response.stream, self._limit)
        return response

    def close(self) -> None:
        self._inner.close()
