"""A fake SMSAPI (api.smsapi.pl), served over real HTTP on loopback, in the test's loop.

Written from SMSAPI's public material, not from cloudpbx's adapter: the legacy `sms.do`
interface as its client libraries use it (smsapi-python-client, smsapi-php-client,
smsapi-java-client) and the delivery-report callback as a public SMSAPI integration
reads it. docs/sms.md lists what each detail rests on.

- `POST|GET /sms.do` with `Authorization: Bearer TOKEN`:
  - send: `to` (one number or a comma-separated list; nine digits, `48` or `+48` and nine
    digits), `message`, `from`, `idx`, `check_idx`, `test`, `notify_url`, `format=json`
    → `{"count", "list": [{"id", "points", "number", "date_sent", "submitted_number",
    "status", "idx", "parts"}], "message", "length", "parts"}` with points as strings
    (`"0.165"`), or `{"error": N, "message": "..."}` (11 no message or longer than 6
    parts, 13 no valid number, 53 idx used before with `check_idx=1`, 70 notify_url
    refused, 103 no credit); a wrong token: HTTP 401 with error 101;
  - status query: `status=ID|ID...` → `{"count", "list": [{"id", "status", "idx",
    "points", "number"}]}`, or error 301 when it knows none of the ids (or the error
    `refuse_lookups` names: SMSAPI no longer supports this way of getting statuses).
- `report(...)`: a delivery report to the message's `notify_url` (GET, `MsgId`, `status`
  401-412, `status_name`, `idx`, `to`, `donedate`, `username`, `points`; several messages
  in one request as comma-separated lists), like SMSAPI's CALLBACK.

Test mode (`test=1`): a full answer with an id and 0 points; nothing is delivered.
`script` makes the next send answers misbehave (an error code, an HTTP status, a slow
answer after the message was taken) for the failure tests; `out_of_credit`,
`refuse_notify_url` and `refuse_lookups` model an account's state until changed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import serve_on_loopback

# SMSAPI's delivery statuses and their numbers in callbacks (its "Lista statusów doręczenia").
STATUS_NUMBERS = {
    "NOT_FOUND": 401,
    "EXPIRED": 402,
    "SENT": 403,
    "DELIVERED": 404,
    "UNDELIVERED": 405,
    "FAILED": 406,
    "REJECTED": 407,
    "UNKNOWN": 408,
    "QUEUE": 409,
    "ACCEPTED": 410,
    "RENEWAL": 411,
    "STOP": 412,
}

# GSM 03.38 basic alphabet (SMSAPI's "Alfabet 7bit GSM"); anything else makes the message
# unicode. (Extension characters, which count twice, are not needed by the tests.)
_GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

ERRORS = {
    8: "Error in request",
    11: "Message too long or there is no message",
    13: "No correct phone numbers",
    14: "Wrong sender name",
    52: "Too many attempts of sending messages to one number (maximum 10 attempts within 60s)",
    53: "Not unique idx parameter, message with the same idx has been already sent",
    57: "The number is blacklisted for this user",
    70: "Invalid URL in notify_url parameter",
    101: "Authorization failed",
    103: "Insufficient credits on Your account",
    105: "Wrong IP address (for IP filter turned on)",
    110: "Action not allowed for your account",
    201: "System internal error",
    202: "Too many simultaneous request, message won't be sent",
    203: "Too many requests. Please try again later.",
    301: "ID of messages doesn't exist",
    999: "System internal error",
}


MAX_PARTS = 6  # SMSAPI's counter stops here: 918 GSM-7 / 402 UCS-2 characters


def recipients(to: str) -> tuple[list[str], list[str]]:
    """`to` as SMSAPI reads it: a comma-separated list; nine digits (a Polish number),
    or `48`/`+48` and nine digits. Returns (valid numbers as 48XXXXXXXXX, invalid ones)."""
    valid, invalid = [], []
    for raw in to.split(","):
        number = raw.strip().removeprefix("+")
        if len(number) == 9 and number.isascii() and number.isdigit():
            number = "48" + number
        if len(number) == 11 and number.startswith("48") and number.isascii() and number.isdigit():
            valid.append(number)
        else:
            invalid.append(raw)
    return valid, invalid


def fake_parts(message: str) -> int:
    """SMS parts as SMSAPI bills them: 160/153 characters, 70/67 with unicode."""
    single, multi = (160, 153) if all(ch in _GSM for ch in message) else (70, 67)
    return 1 if len(message) <= single else -(-len(message) // multi)


@dataclass
class FakeSms:
    id: str
    to: str
    message: str
    sender: str | None
    idx: str | None
    test: bool
    notify_url: str | None
    points: float
    parts: int
    date_sent: int
    status: str = "QUEUE"


@dataclass
class Step:
    """How the fake answers one send request instead of normally.

    `error`: an `{"error", "message"}` answer, message not taken. `http`: that HTTP
    status with `body`, message not taken. `slow`: the message is taken, the answer
    comes `delay` seconds later (a client with a shorter timeout never sees it).
    """

    kind: str
    code: int = 0
    delay: float = 0.0
    body: bytes = b""


@dataclass
class FakeSmsapi:
    token: str = "fake-smsapi-token-7f3c2a91d4"
    point_price: float = 0.165
    messages: dict[str, FakeSms] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    script: deque[Step] = field(default_factory=deque)
    port: int = 0
    out_of_credit: bool = False
    refuse_notify_url: bool = False
    refuse_lookups: int = 0

    def __post_init__(self) -> None:
        self._ids = itertools.count(17_101_000_090_360_359)
        self.app = Starlette(routes=[Route("/sms.do", self._sms_do, methods=["GET", "POST"])])
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Serve on loopback (the same port again after `stop`, once it had one)."""
        self._server, self._task, self.port = await serve_on_loopback(
            self.app, self.port, "fake SMSAPI"
        )

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
        self._server = self._task = None

    # -- what the tests look at ------------------------------------------------------------

    def sends(self) -> list[dict[str, str]]:
        """Every send request received (status queries left out), in order."""
        return [r for r in self.requests if "status" not in r]

    def queries(self) -> list[dict[str, str]]:
        return [r for r in self.requests if "status" in r]

    def by_idx(self, idx: str) -> FakeSms:
        (found,) = [m for m in self.messages.values() if m.idx == idx]
        return found

    def delivered_to_phones(self) -> list[FakeSms]:
        """Messages that really went out (test-mode messages never do)."""
        return [m for m in self.messages.values() if not m.test]

    # -- the API ---------------------------------------------------------------------------

    async def _sms_do(self, request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        self.requests.append({**params, "authorization": request.headers.get("authorization", "")})
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._error(101, status=401)
        if "status" in params:
            return self._status(params["status"])
        return await self._send(params)

    @staticmethod
    def _error(code: int, status: int = 200, **extra: Any) -> Response:
        return JSONResponse({"error": code, "message": ERRORS.get(code, "error"), **extra}, status)

    async def _send(self, params: dict[str, str]) -> Response:
        step = self.script.popleft() if self.script else None
        if step is not None and step.kind == "error":
            return self._error(step.code)
        if step is not None and step.kind == "http":
            return Response(step.body, status_code=step.code)
        to, message = params.get("to", ""), params.get("message", "")
        parts = fake_parts(message) if message else 0
        if not message or parts > MAX_PARTS:
            return self._error(11)
        numbers, wrong = recipients(to)
        if not numbers:
            invalid = [
                {"number": n, "submitted_number": n, "message": "Invalid phone number"}
                for n in wrong
            ]
            return self._error(13, invalid_numbers=invalid)
        if params.get("notify_url") and self.refuse_notify_url:
            return self._error(70)
        if self.out_of_credit:
            return self._error(103)
        idx = params.get("idx") or None
        if params.get("check_idx") == "1" and any(m.idx == idx for m in self.messages.values()):
            return self._error(53)
        test = params.get("test") == "1"
        entries = []
        for number in numbers:
            sms = FakeSms(
                id=str(next(self._ids)),
                to=number,
                message=message,
                sender=params.get("from"),
                idx=idx,
                test=test,
                notify_url=params.get("notify_url"),
                points=0.0 if test else round(parts * self.point_price, 4),
                parts=parts,
                date_sent=int(time.time()),
            )
            self.messages[sms.id] = sms
            entries.append(
                {
                    "id": sms.id,
                    "points": str(sms.points),
                    "number": number,
                    "date_sent": sms.date_sent,
                    "submitted_number": number,
                    "status": "QUEUE",
                    "idx": idx,
                    "parts": parts,
                }
            )
        answer = {
            "count": len(entries),
            "list": entries,
            "message": message,
            "length": len(message),
            "parts": parts,
        }
        if step is not None and step.kind == "slow":
            await asyncio.sleep(step.delay)
        return JSONResponse(answer)

    def _status(self, ids: str) -> Response:
        if self.refuse_lookups:
            return self._error(self.refuse_lookups)
        known = [self.messages[i] for i in ids.split("|") if i in self.messages]
        if not known:
            return self._error(301)
        entries = [
            {
                "id": m.id,
                "number": m.to,
                "status": m.status,
                "idx": m.idx,
                "points": str(m.points),
            }
            for m in known
        ]
        return JSONResponse({"count": len(entries), "list": entries})

    # -- delivery reports ------------------------------------------------------------------

    def set_status(self, message_id: str, status: str) -> None:
        """The message's status changes at the gateway (seen by status queries)."""
        self.messages[message_id].status = status

    async def report(
        self,
        *entries: tuple[str, str],
        via: str | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One CALLBACK request for `(message id, status name)` entries (one message's
        notify_url; several entries become comma-separated lists). `via` replaces the
        scheme and host of the notify_url, like a load balancer in front of a server that
        came back on another address; `params` overrides fields (forged reports)."""
        messages = [self.messages[message_id] for message_id, _ in entries]
        url = messages[0].notify_url
        assert url, "the message was sent without notify_url"
        if via is not None:
            target = urlsplit(via)
            url = urlunsplit(urlsplit(url)._replace(scheme=target.scheme, netloc=target.netloc))
        now = int(time.time())
        fields = {
            "MsgId": ",".join(m.id for m in messages),
            "status": ",".join(str(STATUS_NUMBERS[s]) for _, s in entries),
            "status_name": ",".join(s for _, s in entries),
            "idx": ",".join(m.idx or "" for m in messages),
            "to": ",".join(m.to for m in messages),
            "donedate": ",".join(str(now) for _ in messages),
            "username": "fake@example.com",
            "points": ",".join(str(m.points) for m in messages),
        }
        fields.update(params or {})
        for message, (_, status) in zip(messages, entries, strict=True):
            message.status = status
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            return await client.get(url, params=fields)
