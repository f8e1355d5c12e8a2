"""Limits on the request head, enforced in the HTTP protocol before the app sees anything.

uvicorn's httptools protocol reads a request head of any size and any number of header
lines, for as long as the client takes (a 256 MB header was read to the end and answered
200). `guarded_http_protocol` subclasses it with three limits:

- head bytes (request line + headers): past `max_head_bytes` the answer is 431 and the
  connection is closed; the bytes are counted as they arrive, so httptools never buffers
  more than the limit plus one socket read;
- header lines: past `max_headers` also 431;
- time: the head must be complete `head_timeout` seconds after the connection opened (or,
  on a keep-alive connection, after the next request's first byte); otherwise the
  connection is closed without an answer. This is what sheds a slow-loris.

Idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive`. The
WebSocket upgrade goes through the same head parsing, so it gets the same limits.
httptools stays the parser (rather than h11, whose `h11_max_incomplete_event_size` caps
the head but not its duration, at a higher cost per request): see docs/decisions.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class HeadLimits:
    max_head_bytes: int
    max_headers: int
    head_timeout: float


_REASONS = {431: b"Request Header Fields Too Large"}


def refusal(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON error that closes the connection."""
    code = b"header_too_large"
    body = b'{"error":"' + message.encode() + b'","code":"' + code + b'"}'
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: HeadLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        super().data_received(data)
        if self._reading_head and not self.transport.is_closing():
            if self._deadline is None:
                self._arm_deadline()  # the next request's first bytes on a kept-alive connection
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(f"request head over {self.limits.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            # Stops the parser; data_received sees the closed transport and says nothing more.
            self._refuse(f"more than {self.limits.max_headers} header lines")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_deadline()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # not after our own 431
            super().send_400_response(msg)

    def _refuse(self, message: str) -> None:
        self._cancel_deadline()
        self.transport.write(refusal(431, message))
        self.transport.close()

    def _arm_deadline(self) -> None:
        self._deadline = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self._reading_head and not self.transport.is_closing():
            self.transport.close()


class _Refused(Exception):
    """Raised inside a parser callback to stop httptools after a refusal was sent."""


def guarded_http_protocol(limits: HeadLimits) -> type[asyncio.Protocol]:
    """The httptools protocol class with `limits`, for `uvicorn.Config(http=...)`."""
    return type("GuardedHttpToolsProtocol", (_GuardedHttpToolsProtocol,), {"limits": limits})
