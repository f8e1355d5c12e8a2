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

A refused request (431 here, 413 from the body limits, any answer that closes the
connection) is followed by a lingering close: the server half-closes, discards what the
client still sends for `LINGER` seconds, then closes. Closing at once, with the client's
bytes unread, makes the kernel send a reset that destroys the answer on its way.

Idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive`. The
WebSocket upgrade goes through the same head parsing, so it gets the same limits.
httptools stays the parser (rather than h11, whose `h11_max_incomplete_event_size` caps
the head but not its duration, at a higher cost per request): see docs/decisions.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LINGER = 2.0
"""Seconds a refused client's further bytes are read and dropped before the close."""


@dataclass(frozen=True)
class HeadLimits:
    max_head_bytes: int
    max_headers: int
    head_timeout: float


def header_refusal(message: str) -> bytes:
    """A complete 431 answer, with the API's JSON error shape, that closes the connection."""
    body = orjson.dumps({"error": message, "code": "header_too_large"})
    return b"".join(
        [
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
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
        self._parsed_head = 0
        self._header_count = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self.transport.is_closing():
            return
        # uvicorn's data_received, except that a refusal of ours is not also logged and
        # answered as an invalid request.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Refused):
                self._invalid_request()
            return
        except httptools.HttpParserError:
            self._invalid_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
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
        self._parsed_head = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._parsed_head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here too, for a head that arrived whole in one read.
        self._parsed_head += len(name) + len(value) + 4
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(f"more than {self.limits.max_headers} header lines")
            raise _Refused  # stops the parser; uvicorn's 400 is not sent after the 431
        if self._parsed_head > self.limits.max_head_bytes:
            self._refuse(f"request head over {self.limits.max_head_bytes} bytes")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_deadline()
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a request for the app (not a WebSocket upgrade)
            self.cycle.transport = _LingeringClose(self.transport, self)  # type: ignore[assignment]

    def _invalid_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def _refuse(self, message: str) -> None:
        self._cancel_deadline()
        self.transport.write(header_refusal(message))
        self.linger()

    def linger(self) -> None:
        """Half-close, drop what still comes for LINGER seconds, then close."""
        if self._lingering or self.transport.is_closing():
            return
        self._lingering = True
        self._cancel_deadline()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER, self.transport.close)

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


class _LingeringClose:
    """The transport as a request cycle sees it: its close() is the protocol's linger()."""

    def __init__(self, transport: asyncio.Transport, protocol: _GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._protocol._lingering or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._protocol.linger()


class _Refused(Exception):
    """Raised inside a parser callback to stop httptools after a refusal was sent."""


def guarded_http_protocol(limits: HeadLimits) -> type[asyncio.Protocol]:
    """The httptools protocol class with `limits`, for `uvicorn.Config(http=...)`."""
    return type("GuardedHttpToolsProtocol", (_GuardedHttpToolsProtocol,), {"limits": limits})
