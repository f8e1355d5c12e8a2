"""SMSAPI's HTTP interface, as far as cloudpbx uses it: pure functions, no I/O.

What each detail rests on (public client libraries, a public callback handler, or
memory of the docs) is listed in docs/sms.md. In short:

- send: `POST {api_url}/sms.do`, form-encoded, `Authorization: Bearer TOKEN`, with `to`,
  `message`, `from`, `format=json`, `encoding=utf-8`, `details=1`, `idx`, `check_idx=1`,
  `notify_url` and `test=1` for tests. Answer `{"count", "list": [{"id", "points",
  "number", "date_sent", "submitted_number", "status", "idx"}], "parts", ...}` or
  `{"error": N, "message": "..."}` (also with HTTP 200).
- status query: the same endpoint with `status=ID|ID|...`; answer `{"count", "list"}` with
  each message's `id`, `status` (a name), `idx`, `points`.
- delivery report (callback): a request to `notify_url` with `MsgId`, `status` (401-412),
  `idx`, `to`, `donedate` (unix time), `points`, `username`..., several reports in one
  request as comma-separated lists; the answer must be `OK`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from cloudpbx.domain.states import SmsStatus
from cloudpbx.ports.sms import StatusReport, SubmitOutcome, SubmitResult

# Delivery status codes of callbacks (401-412), in the contract's order.
STATUS_CODES: dict[int, SmsStatus] = {
    401: SmsStatus.NOT_FOUND,
    402: SmsStatus.EXPIRED,
    403: SmsStatus.SENT,
    404: SmsStatus.DELIVERED,
    405: SmsStatus.UNDELIVERED,
    406: SmsStatus.FAILED,
    407: SmsStatus.REJECTED,
    408: SmsStatus.UNKNOWN,
    409: SmsStatus.QUEUE,
    410: SmsStatus.ACCEPTED,
    411: SmsStatus.RENEWAL,
    412: SmsStatus.STOP,
}
STATUS_NUMBERS = {status: code for code, status in STATUS_CODES.items()}

# Error codes after which the same request may succeed later; the gateway did not take the
# message. 8: error in request (SMSAPI's clients class it with the server errors 201,
# 666, 999); 52: too many messages to one number within 60 s; 200: unsuccessful
# submission; 201, 666, 999: internal errors; 202, 203: too many (simultaneous) requests.
RETRY_ERRORS = frozenset({8, 52, 200, 201, 202, 203, 666, 999})
# Errors of the account, not of the message (SMSAPI's clients raise them as one class):
# 101 bad authorization, 102 bad username or password, 103 no credit, 105 IP filter,
# 110 action not allowed for the account. Every message would get the same answer until
# someone fixes the account: its outbox is held, nothing is failed.
ACCOUNT_ERRORS = frozenset({101, 102, 103, 105, 110})
# "Invalid URL in notify_url parameter": our callback URL is wrong (a setting), not the
# message: send without it and alert the operator.
NOTIFY_URL_REFUSED = 70
# `check_idx=1` and a message with this idx was sent before.
DUPLICATE_IDX = 53
# Status query for ids the gateway does not know.
UNKNOWN_ID_ERRORS = frozenset({301, 400})

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class ApiError:
    """An `{"error": N, "message": ...}` answer."""

    code: int
    message: str

    def describe(self) -> str:
        return (
            f"SMSAPI error {self.code}: {self.message}"
            if self.message
            else (f"SMSAPI error {self.code}")
        )


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def api_error(document: Any) -> ApiError | None:
    """The error of an answer, if it is one."""
    if not isinstance(document, dict) or document.get("error") in (None, "", 0):
        return None
    try:
        code = int(document["error"])
    except (TypeError, ValueError):
        return ApiError(0, str(document.get("message") or document["error"]))
    return ApiError(code, str(document.get("message") or ""))


def points_of(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        points = Decimal(str(value))
    except InvalidOperation:
        return None
    return points if points.is_finite() and points >= 0 else None


def cost_in_grosze(points: Decimal | None, grosze_per_point: float, test: bool) -> int | None:
    """The message's price: points × grosze per point, rounded up to a whole grosz."""
    if test:
        return 0
    if points is None:
        return None
    return math.ceil(points * Decimal(str(grosze_per_point)))


def status_from_name(value: Any) -> SmsStatus | None:
    """A status as the status query names it (`DELIVERED`), or by number (`404`)."""
    text = str(value or "").strip().upper()
    if text.isdigit():
        return STATUS_CODES.get(int(text))
    try:
        return SmsStatus(text)
    except ValueError:
        return None


def interpret_send(
    http_status: int, body: bytes, *, grosze_per_point: float, test: bool
) -> SubmitResult:
    """What one `sms.do` send answer means for the message."""
    document = _json(body)
    error = api_error(document)
    if error is not None:
        if error.code == DUPLICATE_IDX:
            return SubmitResult(
                None, SmsStatus.QUEUE, error.describe(), outcome=SubmitOutcome.DUPLICATE
            )
        if error.code in RETRY_ERRORS:
            outcome = SubmitOutcome.RETRY
        elif error.code in ACCOUNT_ERRORS:
            outcome = SubmitOutcome.HOLD
        else:
            outcome = SubmitOutcome.REFUSED
        return SubmitResult(
            None, SmsStatus.FAILED, error.describe(), outcome=outcome, error_code=error.code
        )
    if http_status == 429:
        return SubmitResult(
            None,
            SmsStatus.QUEUE,
            "SMSAPI: too many requests (HTTP 429)",
            outcome=SubmitOutcome.RETRY,
        )
    if http_status >= 500:
        # A proxy may have passed the request on before failing: the message may be there.
        return SubmitResult(
            None,
            SmsStatus.QUEUE,
            f"SMSAPI answered HTTP {http_status}",
            outcome=SubmitOutcome.UNSURE,
        )
    if http_status >= 400:
        return SubmitResult(
            None,
            SmsStatus.FAILED,
            f"SMSAPI refused the request (HTTP {http_status})",
            outcome=SubmitOutcome.REFUSED,
        )
    entries = document.get("list") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return SubmitResult(
            None,
            SmsStatus.QUEUE,
            "SMSAPI answered without a message list",
            outcome=SubmitOutcome.UNSURE,
        )
    entry: dict[str, Any] = entries[0]
    entry_error = entry.get("error")
    if entry_error not in (None, "", 0):
        text = str(entry.get("message") or entry_error)
        return SubmitResult(
            None,
            SmsStatus.FAILED,
            f"SMSAPI refused the message: {text}",
            outcome=SubmitOutcome.REFUSED,
        )
    message_id = str(entry.get("id") or "")
    if not _ID.fullmatch(message_id):
        return SubmitResult(
            None,
            SmsStatus.QUEUE,
            "SMSAPI answered without a message id",
            outcome=SubmitOutcome.UNSURE,
        )
    points = points_of(entry.get("points"))
    # `parts` at the top level with `details=1`; SMSAPI's python client fixtures also put
    # it on the entry.
    parts = document.get("parts", entry.get("parts"))
    return SubmitResult(
        message_id=message_id,
        status=status_from_name(entry.get("status")) or SmsStatus.QUEUE,
        points=float(points) if points is not None else None,
        outcome=SubmitOutcome.ACCEPTED,
        cost=cost_in_grosze(points, grosze_per_point, test),
        parts=parts if isinstance(parts, int) and parts > 0 else None,
    )


def interpret_status(body: bytes) -> list[StatusReport] | ApiError:
    """A status query's answer: one report per message it lists, or the error."""
    document = _json(body)
    error = api_error(document)
    if error is not None:
        return error
    entries = document.get("list") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return ApiError(0, "status answer without a list")
    reports: list[StatusReport] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        message_id = str(entry.get("id") or "")
        status = status_from_name(entry.get("status"))
        if not _ID.fullmatch(message_id) or status is None:
            continue
        idx = str(entry.get("idx") or "")
        points = points_of(entry.get("points"))
        reports.append(
            StatusReport(
                status=status,
                idx=idx if _ID.fullmatch(idx) else None,
                message_id=message_id,
                points=float(points) if points is not None else None,
            )
        )
    return reports


@dataclass(frozen=True, slots=True)
class CallbackParse:
    """The reports of one callback request, and how many entries were unusable."""

    reports: list[StatusReport]
    skipped: int


def _field(values: list[str], k: int) -> str:
    """Entry k of a comma-separated field; a single value applies to every entry."""
    if k < len(values):
        return values[k]
    return values[0] if len(values) == 1 else ""


def parse_callback(params: Mapping[str, str]) -> CallbackParse:
    """The delivery reports of one callback request (`MsgId=1,2&status=404,403&...`).

    Every field may carry one value per message (comma-separated, same order as `MsgId`)
    or a single value for all. An entry without a known status code, or whose id is not an
    id, is skipped (and counted); `idx` is used only when there is one per message.
    """
    ids = [v.strip() for v in params.get("MsgId", "").split(",")]
    statuses = [v.strip() for v in params.get("status", "").split(",")]
    idxs = [v.strip() for v in params.get("idx", "").split(",")]
    points = [v.strip() for v in params.get("points", "").split(",")]
    done = [v.strip() for v in params.get("donedate", "").split(",")]
    if ids == [""]:
        return CallbackParse([], 0)
    reports: list[StatusReport] = []
    skipped = 0
    for k, message_id in enumerate(ids):
        status = status_from_name(_field(statuses, k))
        if not _ID.fullmatch(message_id) or status is None:
            skipped += 1
            continue
        idx = idxs[k] if len(idxs) == len(ids) and _ID.fullmatch(idxs[k]) else None
        entry_points = points_of(_field(points, k))
        stamp = _field(done, k)
        done_at = datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else None
        reports.append(
            StatusReport(
                status=status,
                idx=idx,
                message_id=message_id,
                points=float(entry_points) if entry_points is not None else None,
                done_at=done_at,
            )
        )
    return CallbackParse(reports, skipped)
