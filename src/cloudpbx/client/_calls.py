"""The endpoints as data: what to send, and how an answer becomes a result or an error.

Nothing here does I/O. The sync and async clients send a :class:`Call` their own way
(with retries when it is idempotent) and hand the response to `call.parse`, which is the
one place where HTTP answers become results or exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from cloudpbx.client._dates import date_param, to_date
from cloudpbx.client._exceptions import (
    ActionError,
    APIError,
    AuthError,
    BadRequest,
    Forbidden,
    NotFound,
    ProtocolError,
    RequestInfo,
    ServerError,
    SmsError,
    TransportError,
    TruncatedError,
)
from cloudpbx.client._models import (
    CdrRow,
    DialResult,
    Page,
    Recording,
    SmsResponse,
    Transcription,
    TranscriptionItem,
)
from cloudpbx.client._types import DateLike

T = TypeVar("T")
R = TypeVar("R")

CDR_CAP = 10_000
RECORD_CAP = 5_000
TRANSCRIPTION_CAP = 10_000
"""The documented caps; used to spot a capped list from a server without the headers."""

_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: AuthError,
    403: Forbidden,
    404: NotFound,
}


def redact(url: str) -> str:
    """The URL without its `pbxkey` query value (error messages and logs never show keys)."""
    parts = urlsplit(url)
    if "pbxkey=" not in parts.query:
        return url
    query = "&".join(
        "pbxkey=***" if item.startswith("pbxkey=") else item for item in parts.query.split("&")
    )
    return urlunsplit(parts._replace(query=query))


def request_info(request: httpx.Request) -> RequestInfo:
    return RequestInfo(request.method, redact(str(request.url)))


def error_for(status: int, body: bytes, content_type: str, request: RequestInfo | None) -> APIError:
    """The exception for an error answer: `{"error", "code"}` JSON or a plain-text body."""
    message, code = "", None
    if "json" in content_type:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            message = str(decoded.get("error") or decoded.get("message") or "")
            code = str(decoded["code"]) if decoded.get("code") is not None else None
    if not message:
        message = body.decode("utf-8", "replace").strip()[:500] or httpx.codes.get_reason_phrase(
            status
        )
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(message, status=status, code=code, request=request)


def raise_for_status(response: httpx.Response) -> None:
    """Raise the fitting APIError for a non-2xx answer (its body must have been read)."""
    if response.is_success:
        return
    raise error_for(
        response.status_code,
        response.content,
        response.headers.get("content-type", ""),
        request_info(response.request),
    )


def transient(exc: httpx.TransportError) -> bool:
    """Whether trying again could help (not for a URL without http:// or https://)."""
    return not isinstance(exc, httpx.UnsupportedProtocol)


def transport_error(exc: httpx.HTTPError) -> TransportError | ProtocolError:
    """httpx's exceptions, translated: no answer → TransportError, a bad one → ProtocolError."""
    try:
        info: RequestInfo | None = request_info(exc.request)
    except RuntimeError:  # an exception raised before a request existed
        info = None
    kind = TransportError if isinstance(exc, httpx.TransportError) else ProtocolError
    reason = str(exc) or type(exc).__name__
    where = f" ({info})" if info is not None else ""
    return kind(f"{type(exc).__name__}: {reason}{where}", request=info)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ProtocolError(
            f"expected JSON, got {response.headers.get('content-type', 'no content type')}",
            request=request_info(response.request),
        ) from None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request of the contract and the parser of its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] | None = None
    idempotent: bool = True


def _dates(start: DateLike | None, stop: DateLike | None) -> dict[str, str]:
    params = {}
    if (value := date_param(start)) is not None:
        params["datestart"] = value
    if (value := date_param(stop)) is not None:
        params["datestop"] = value
    return params


def _page_parser(row: Callable[[object], R], cap: int) -> Callable[[httpx.Response], Page[R]]:
    def parse(response: httpx.Response) -> Page[R]:
        raise_for_status(response)
        body = _json(response)
        if not isinstance(body, list):
            raise ProtocolError(
                f"expected a JSON array, got {type(body).__name__}",
                request=request_info(response.request),
            )
        rows = [row(item) for item in body]
        total_header = response.headers.get("x-total-count")
        total = int(total_header) if total_header and total_header.isdigit() else None
        truncated = response.headers.get("x-truncated", "").lower() == "true"
        if total is not None and total > len(rows):
            truncated = True
        if total is None and "x-truncated" not in response.headers and len(rows) >= cap:
            truncated = True  # a server without the cap headers, at the documented cap
        return Page(rows, total=total, truncated=truncated)

    return parse


def _segment(uniqueid: str) -> str:
    if not uniqueid or uniqueid in (".", ".."):
        raise ValueError(f"not a call id: {uniqueid!r}")
    return quote(uniqueid, safe="")


def cdr(start: DateLike | None, stop: DateLike | None) -> Call[Page[CdrRow]]:
    return Call("GET", "/cdr", _page_parser(CdrRow.from_json, CDR_CAP), _dates(start, stop))


def recordings(start: DateLike | None, stop: DateLike | None) -> Call[Page[Recording]]:
    parse = _page_parser(Recording.from_json, RECORD_CAP)
    return Call("GET", "/record", parse, _dates(start, stop))


def transcriptions(start: DateLike | None, stop: DateLike | None) -> Call[Page[TranscriptionItem]]:
    parse = _page_parser(TranscriptionItem.from_json, TRANSCRIPTION_CAP)
    return Call("GET", "/transcription", parse, _dates(start, stop))


def _parse_transcription(response: httpx.Response) -> Transcription:
    raise_for_status(response)
    return Transcription.from_json(_json(response))


def transcription(uniqueid: str) -> Call[Transcription]:
    return Call("GET", f"/transcription/{_segment(uniqueid)}", _parse_transcription)


def recording_path(uniqueid: str) -> str:
    return f"/record/{_segment(uniqueid)}"


def _parse_dial(response: httpx.Response) -> DialResult:
    originate_id = response.headers.get("x-originate-id")
    if response.status_code == 500 and response.text.strip() == "Action Error":
        raise ActionError(
            "Action Error: the PBX did not accept the call",
            status=500,
            request=request_info(response.request),
            originate_id=originate_id,
        )
    raise_for_status(response)
    return DialResult(originate_id=originate_id)


def dial(cpa: str, cpb: str) -> Call[DialResult]:
    """Never retried: a retry could ring the phone twice."""
    return Call("GET", "/dial", _parse_dial, {"cpa": cpa, "cpb": cpb}, idempotent=False)


def _parse_sms(response: httpx.Response) -> SmsResponse:
    if response.status_code == 500 and "json" in response.headers.get("content-type", ""):
        body = _json(response)
        if isinstance(body, dict) and "responseId" in body:
            answer = SmsResponse.from_json(body)
            raise SmsError(
                answer.response_error_message or "the SMS gateway failed",
                status=500,
                response=answer,
                request=request_info(response.request),
            )
    raise_for_status(response)
    return SmsResponse.from_json(_json(response))


def send_sms(to: str, body: str, test: bool) -> Call[SmsResponse]:
    """Never retried: a retry could send (and bill) the message twice."""
    data = {"to": to, "body": body, "test": "true" if test else "false"}
    return Call("POST", "/sendSMS", _parse_sms, data=data, idempotent=False)


class RangeCursor(Generic[R]):
    """Walks a date range whose rows exceed the server's cap, one request at a time.

    A capped answer holds the oldest rows, so every day before the last row's day is
    complete: those rows are kept and the next request starts at that last day. A page
    that is all one day cannot be narrowed further (ranges are whole days): that raises
    TruncatedError, or with `strict=False` keeps the capped rows and moves to the next day.
    """

    def __init__(
        self,
        make_call: Callable[[DateLike | None, DateLike | None], Call[Page[R]]],
        day_of: Callable[[R], date],
        start: DateLike | None,
        stop: DateLike | None,
        *,
        strict: bool = True,
    ) -> None:
        self._make_call = make_call
        self._day_of = day_of
        self._start: date | None = None if start is None else to_date(start)
        self._stop: date | None = None if stop is None else to_date(stop)
        self._strict = strict
        self._done = False
        self.requests = 0

    def next_call(self) -> Call[Page[R]] | None:
        if self._done:
            return None
        self.requests += 1
        return self._make_call(self._start, self._stop)

    def feed(self, page: Page[R], request: RequestInfo | None = None) -> list[R]:
        """The rows of `page` to hand out now; afterwards `next_call` says what is next."""
        if not page.truncated:
            self._done = True
            return list(page)
        if not page:
            raise ProtocolError("the server said the list was capped but sent no rows")
        first, last = self._day_of(page[0]), self._day_of(page[-1])
        if first == last:
            if self._strict:
                raise TruncatedError(
                    f"{last.isoformat()} alone has more rows ({page.total or 'unknown'}) than "
                    f"the server returns at once ({len(page)}); ranges cannot be narrower "
                    f"than a day",
                    total=page.total,
                    received=len(page),
                    request=request,
                )
            self._start = last + timedelta(days=1)
            # Without a stop the server's today is the end; this machine's day stands in.
            if self._start > (self._stop or date.today()):
                self._done = True
            return list(page)
        self._start = last
        return [row for row in page if self._day_of(row) < last]


def cdr_cursor(start: DateLike | None, stop: DateLike | None, strict: bool) -> RangeCursor[CdrRow]:
    return RangeCursor(cdr, lambda row: row.calldate.date(), start, stop, strict=strict)


def recording_cursor(
    start: DateLike | None, stop: DateLike | None, strict: bool
) -> RangeCursor[Recording]:
    return RangeCursor(recordings, lambda row: row.date.date(), start, stop, strict=strict)


def transcription_cursor(
    start: DateLike | None, stop: DateLike | None, strict: bool
) -> RangeCursor[TranscriptionItem]:
    return RangeCursor(transcriptions, lambda row: row.calldate.date(), start, stop, strict=strict)
