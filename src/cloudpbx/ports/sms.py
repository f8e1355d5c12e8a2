"""The SMS gateway port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cloudpbx.domain.states import SmsStatus


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """A message ready to go: `to` international, `idx` our idempotency key."""

    pbx: str
    idx: str
    to: str
    body: str
    test: bool
    parts: int


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The gateway's answer: its message id and status, or an error message."""

    message_id: str | None
    status: SmsStatus
    error: str | None = None
    points: float | None = None


class SmsStatusSink(Protocol):
    """Where a gateway reports later status changes (callbacks, polling, simulation)."""

    async def sms_status(self, pbx: str, message_id: str, status: SmsStatus) -> None: ...


class SmsGateway(Protocol):
    """Sends SMS; later status changes go to the sink given to `start`."""

    async def start(self, sink: SmsStatusSink) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, message: OutgoingSms) -> SubmitResult: ...
