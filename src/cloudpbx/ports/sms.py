"""The SMS gateway port.

A gateway takes one message at a time (`submit`), says what became of the submission
(`SubmitResult.kind`), and reports later status changes either by calling the sink given
to `start` (the simulator) or through the server's callback endpoint and `query`
(SMSAPI; see docs/sms.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from cloudpbx.domain.states import SmsStatus


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """A message ready to go: `to` international, `idx` our idempotency key (the message's
    `responseId`: the gateway must never send two messages with one idx)."""

    pbx: str
    idx: str
    to: str
    body: str
    test: bool
    parts: int


class SubmitOutcome(StrEnum):
    """What a submission came to, as far as the gateway let us know."""

    ACCEPTED = "accepted"  # the gateway has the message (message_id, status, points)
    DUPLICATE = "duplicate"  # the gateway already had a message with this idx: sent before
    REFUSED = "refused"  # refused for good (invalid number, message too long...)
    HOLD = "hold"  # refused for the account's sake (credentials, credit, IP filter): the
    # message is fine; hold the account's outbox until a submission gets through
    RETRY = "retry"  # a transient failure before the gateway took it: safe to retry
    UNSURE = "unsure"  # the gateway may have it (timeout, 5xx): retry with the same idx


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The gateway's answer: its message id and status, or an error message.

    `outcome` None means ACCEPTED, or REFUSED when `error` is set (the simulator's form).
    `cost` is the price in grosze when the gateway prices the message itself (SMSAPI:
    from the points it charged), None to keep the server's parts × price estimate.
    """

    message_id: str | None
    status: SmsStatus
    error: str | None = None
    points: float | None = None
    outcome: SubmitOutcome | None = None
    cost: int | None = None
    parts: int | None = None
    error_code: int | None = None  # the gateway's own error number, when it gave one

    @property
    def kind(self) -> SubmitOutcome:
        if self.outcome is not None:
            return self.outcome
        return SubmitOutcome.ACCEPTED if self.error is None else SubmitOutcome.REFUSED


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One status report of a gateway (a callback entry or a status query's answer).

    `idx` is our id when the gateway echoes it back; `message_id` is the gateway's own id.
    At least one of the two names the message.
    """

    status: SmsStatus
    idx: str | None = None
    message_id: str | None = None
    points: float | None = None
    done_at: datetime | None = None


class SmsGatewayUnavailable(Exception):
    """A status query could not be answered now (network, gateway error); try later."""


class SmsLookupRefused(SmsGatewayUnavailable):
    """The gateway answered a status query with a refusal (e.g. lookups not allowed for
    the account): asking again will not help; statuses come only by callback."""


class SmsStatusSink(Protocol):
    """Where a gateway reports later status changes (callbacks, polling, simulation)."""

    async def sms_status(self, pbx: str, message_id: str, status: SmsStatus) -> None: ...


class SmsGateway(Protocol):
    """Sends SMS; later status changes go to the sink given to `start`, or come back
    through `query` (when `polls`) and the callback endpoint.

    Optional attributes the service reads when present: `poll_interval` (seconds between
    lookups of one message, instead of `sms_poll_interval`), `kind` (its name in
    /healthz) and `alert` (an operator's problem, e.g. a refused callback URL)."""

    @property
    def polls(self) -> bool:
        """Whether `query` can look statuses up by the gateway's message id."""
        ...

    async def start(self, sink: SmsStatusSink) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, message: OutgoingSms) -> SubmitResult: ...

    async def query(self, message_ids: Sequence[str]) -> list[StatusReport]:
        """The current status of each message the gateway knows (by its message id);
        raises SmsGatewayUnavailable when it cannot tell now."""
        ...
