"""The PBX's WebSocket as an endless, resumable stream of `(id, event)`.

:class:`StreamCore` holds everything but the I/O: the URL (with `last_event_id` once an id
was seen), dropping ids already handed out, and deciding, for each failure, whether to
give up (a refused key, an unknown PBX) or to reconnect and after how long. The sync
(:class:`EventStream`) and async (:class:`AsyncEventStream`) shells only connect, receive
and sleep.

Resume: ids are strictly increasing per channel, so the last id handed out is all that is
needed; a reconnect asks for everything after it, and anything at or below it that still
arrives is dropped. By default each message holds one event; on a server that bundles
(`ws_bundle_events`), the events of one message share its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import websockets.exceptions as ws_errors
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from cloudpbx.client._backoff import RetryPolicy
from cloudpbx.client._calls import error_for, redact
from cloudpbx.client._events import Event, parse_message
from cloudpbx.client._exceptions import ProtocolError, RequestInfo, TransportError

log = logging.getLogger("cloudpbx.client")

CLOSE_TOO_SLOW = 4008
"""The server's close code for a client that fell behind: reconnect at once and resume."""

STABLE_AFTER = 60.0
"""A connection that lived this long resets the reconnect backoff."""

GapCallback = Callable[[int | None], None]
EventItem = tuple[int, Event]


def ws_base(api_url: str) -> str:
    """`http(s)://host/prefix` → `ws(s)://host/prefix` (ws/wss URLs are kept)."""
    base = api_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


def _log_gap(last_event_id: int | None) -> None:
    log.warning(
        "events after id %s were partly dropped from the server's history; some were missed",
        last_event_id,
    )


class StreamCore:
    """The stream's state and decisions, without I/O."""

    def __init__(
        self,
        ws_url: str,
        pbx: str,
        api_key: str,
        *,
        last_event_id: int | None,
        reconnect: RetryPolicy,
        on_gap: GapCallback | None,
    ) -> None:
        if not pbx:
            raise ValueError("the event stream needs the PBX name (pbx=...)")
        self._base = f"{ws_base(ws_url)}/ws/pbx_{quote(pbx, safe='')}"
        self._key = api_key
        self._policy = reconnect
        self._delays = reconnect.delays()
        self._on_gap = on_gap or _log_gap
        self._connected_at = 0.0
        self._healthy = False
        self.last_event_id = last_event_id
        self.connects = 0

    @property
    def reconnects(self) -> int:
        """How many times the stream connected again after its first connection."""
        return max(0, self.connects - 1)

    def url(self) -> str:
        query = {"pbxkey": self._key}
        if self.last_event_id is not None:
            query["last_event_id"] = str(self.last_event_id)
        return f"{self._base}?{urlencode(query)}"

    def request(self) -> RequestInfo:
        return RequestInfo("GET", redact(self.url()))

    def connected(self, headers: Mapping[str, str]) -> None:
        """The upgrade succeeded; `X-Resume: partial` means the history lost some events."""
        self.connects += 1
        self._connected_at = time.monotonic()
        if self.last_event_id is not None and headers.get("x-resume", "").lower() == "partial":
            self._on_gap(self.last_event_id)

    def accept(self, data: str | bytes) -> list[EventItem]:
        """A received message's events, or [] for one already handed out."""
        try:
            message = parse_message(data)
        except ProtocolError as exc:
            log.warning("ignored a WebSocket message: %s", exc.message)
            return []
        self._healthy = True  # the server works: the next failure starts the backoff anew
        if self.last_event_id is not None and message.id <= self.last_event_id:
            return []
        self.last_event_id = message.id
        return [(message.id, event) for event in message.events]

    def failed(self, exc: Exception) -> float:
        """The wait before reconnecting after `exc`; raises when it must not reconnect."""
        if isinstance(exc, ws_errors.InvalidStatus):
            response = exc.response
            error = error_for(
                response.status_code,
                bytes(response.body or b""),
                response.headers.get("content-type", ""),
                self.request(),
            )
            if response.status_code < 500 and response.status_code not in (408, 429):
                raise error from exc
            reason = str(error)
        elif isinstance(exc, ws_errors.ConnectionClosed):
            # Every close the server initiates (4008 too slow, 1011 keep-alive timeout,
            # 1012 restart) names the id to resume from.
            resume_at = _RESUME_AT.search(exc.rcvd.reason) if exc.rcvd is not None else None
            if self.last_event_id is None and resume_at is not None:
                # Cut off before the first event: the server names where we stood.
                self.last_event_id = int(resume_at.group(1))
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_TOO_SLOW:
                log.info("the server closed the stream (too slow); resuming at once")
                return 0.0
            reason = str(exc)
        elif isinstance(exc, ws_errors.InvalidURI):
            raise TransportError(f"invalid WebSocket URL: {exc}", request=self.request()) from exc
        elif isinstance(exc, OSError | TimeoutError | EOFError | ws_errors.WebSocketException):
            reason = f"{type(exc).__name__}: {exc}"
        else:
            raise exc
        stable = self._connected_at and time.monotonic() - self._connected_at >= STABLE_AFTER
        if self._healthy or stable:
            self._delays = self._policy.delays()
        self._healthy = False
        self._connected_at = 0.0
        delay = next(self._delays, None)
        if delay is None:
            raise TransportError(
                f"the event stream failed and the reconnect attempts are spent: {reason}",
                request=self.request(),
            ) from exc
        log.info("event stream interrupted (%s); reconnecting in %.2fs", reason, delay)
        return delay


_RESUME_AT = re.compile(r"last_event_id=(\d+)")
_RECOVERABLE = (OSError, TimeoutError, EOFError, ws_errors.WebSocketException)


class EventStream(Iterator[EventItem]):
    """Sync iterator over the PBX's events; reconnects and resumes until closed.

    Connects on `with` (or at the first `next`); `close()` disconnects, from another
    thread too, and ends the iteration.
    """

    def __init__(self, core: StreamCore, *, open_timeout: float, **connect_options: Any) -> None:
        self._core = core
        self._open_timeout = open_timeout
        self._options = connect_options
        self._closed = threading.Event()
        self._ws: SyncConnection | None = None
        self._connection = contextlib.ExitStack()
        self._pending: deque[EventItem] = deque()

    @property
    def last_event_id(self) -> int | None:
        """The id of the last message handed out (resume from it in a later process)."""
        return self._core.last_event_id

    @property
    def reconnects(self) -> int:
        return self._core.reconnects

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> EventItem:
        while not self._pending:
            if self._closed.is_set():
                raise StopIteration
            ws = self._ws or self._connect()
            try:
                data = ws.recv()
            except _RECOVERABLE as exc:
                self._ws = None
                self._connection.close()
                self._wait(exc)
                continue
            self._pending.extend(self._core.accept(data))
        return self._pending.popleft()

    def _connect(self) -> SyncConnection:
        while True:
            if self._closed.is_set():
                raise StopIteration
            try:
                # entered as a context manager, the form websockets wants; closed by
                # `_connection.close()` when dropped
                ws: SyncConnection = self._connection.enter_context(
                    sync_connect(self._core.url(), open_timeout=self._open_timeout, **self._options)
                )
            except _RECOVERABLE as exc:
                self._wait(exc)
                continue
            assert ws.response is not None
            self._core.connected(ws.response.headers)
            self._ws = ws
            if self._closed.is_set():  # closed while connecting
                ws.close()
            return ws

    def _wait(self, exc: Exception) -> None:
        if self._closed.is_set():
            return
        delay = self._core.failed(exc)
        if delay:
            self._closed.wait(delay)

    def close(self) -> None:
        """Disconnect; from another thread too (the iterating loop then ends)."""
        self._closed.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        self._connection.close()

    def __enter__(self) -> EventStream:
        if self._ws is None:
            with contextlib.suppress(StopIteration):
                self._connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEventStream:
    """Async iterator over the PBX's events; reconnects and resumes until closed.

    `async with client.events(...) as stream:` connects (so everything published after it
    is received) and disconnects at the end; `aclose()` from another task ends the loop.
    """

    def __init__(self, core: StreamCore, *, open_timeout: float, **connect_options: Any) -> None:
        self._core = core
        self._open_timeout = open_timeout
        self._options = connect_options
        self._closed = asyncio.Event()
        self._ws: AsyncConnection | None = None
        self._pending: deque[EventItem] = deque()

    @property
    def last_event_id(self) -> int | None:
        return self._core.last_event_id

    @property
    def reconnects(self) -> int:
        return self._core.reconnects

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> EventItem:
        while not self._pending:
            if self._closed.is_set():
                raise StopAsyncIteration
            ws = self._ws or await self._connect()
            try:
                data = await ws.recv()
            except _RECOVERABLE as exc:
                self._ws = None
                await ws.close()
                await self._wait(exc)
                continue
            self._pending.extend(self._core.accept(data))
        return self._pending.popleft()

    async def _connect(self) -> AsyncConnection:
        while True:
            if self._closed.is_set():
                raise StopAsyncIteration
            try:
                ws = await async_connect(
                    self._core.url(), open_timeout=self._open_timeout, **self._options
                )
            except _RECOVERABLE as exc:
                await self._wait(exc)
                continue
            assert ws.response is not None
            self._core.connected(ws.response.headers)
            self._ws = ws
            if self._closed.is_set():
                await ws.close()
            return ws

    async def _wait(self, exc: Exception) -> None:
        if self._closed.is_set():
            return
        delay = self._core.failed(exc)
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)

    async def aclose(self) -> None:
        """Disconnect; from another task too (the iterating loop then ends)."""
        self._closed.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> AsyncEventStream:
        if self._ws is None:
            with contextlib.suppress(StopAsyncIteration):
                await self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
