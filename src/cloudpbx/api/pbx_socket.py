"""The WebSocket connection protocol: uvicorn hands it every upgrade; it owns the socket.

Why not uvicorn's WebSocket protocols: they run a coroutine per connection and frame,
wrap and send every message once per subscriber (58 % of fan-out time went to uvicorn's
send, 15 % to waking a future per connection per event, docs/decisions.md). Here:

- The handshake is parsed by wsproto's sans-I/O `H11Handshake` (it accepts the document's
  curl line with its 13-byte `Sec-WebSocket-Key`, which `websockets` refuses), and the
  decision is the ASGI app's, run once in a short-lived task: routing (404 for a bad
  channel), the auth throttle (429), authentication (401/403) and `last_event_id` (400)
  stay where they are, in api/ws.py and the middleware.
- Once accepted, no task, coroutine or queue is left per connection. The bus calls
  `deliver` with a batch framed once for all subscribers, and the connection writes that
  bytes object to its transport (one `transport.write`, no copy).
- A resuming connection is subscribed before the history is read: live batches are kept
  (references only) while the backlog is written with flow control, then flushed,
  skipping ids already sent, and the connection goes live.
- Slow client: the transport pauses us when its write buffer passes `write_limit` bytes.
  A live connection that is paused is cut off at once: close 4008 naming the resume id
  (the last id handed to the transport, which flushes it before the close frame); it
  gets `drain_timeout` to drain, then it is aborted. Nobody else waits for it.
- Keep-alive (api/keepalive.py), 1011 on a missing pong, 1012 on shutdown: every close
  the server starts names the id to resume from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar, cast
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import (
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)
from uvicorn.server import ServerState
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from cloudpbx.api.keepalive import ABORT_AFTER, KeepAlive, resume_reason
from cloudpbx.api.wsframe import (
    EMPTY_PONG,
    MAX_CLIENT_FRAME,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    PING,
    ProtocolViolation,
    close_frame,
    frame,
    parse_frames,
    text_frame,
)
from cloudpbx.ports.bus import EventBus, FramedBatch, WireMessage

log = logging.getLogger(__name__)
access_log = logging.getLogger("uvicorn.error")
"""uvicorn's own WebSocket lines ('"WebSocket /ws/pbx_X?pbxkey=[redacted]" [accepted]'):
operators keep them, through the key redaction of api/redaction.py."""

SOCKET_EXTENSION = "cloudpbx.socket"
"""ASGI scope extension: the `PbxSocket` of the connection, for api/ws.py."""
CLOSE_TOO_SLOW = 4008
CLOSE_SERVICE_RESTART = 1012
CLOSE_KEEPALIVE = 1011
SHUTDOWN_PATIENCE = 2.0
"""Seconds a connection closed for a restart gets to flush before it is cut."""

_now = time.monotonic  # the clock of asyncio's loop.time(), without the method call


class PbxSocket(asyncio.Protocol):
    """One WebSocket connection, from the upgrade request to the close."""

    keepalive: ClassVar[KeepAlive]
    write_limit: ClassVar[int]
    """Bytes in the transport's write buffer past which a live client is too slow."""
    pending_limit: ClassVar[int]
    """Live messages kept for a connection still writing its backlog."""
    drain_timeout: ClassVar[float]
    closes: ClassVar[dict[int, int]]
    """Closes this server initiated, by code (read by the metrics, once a second)."""

    __slots__ = (
        "_app_state",
        "_bus",
        "_channel",
        "_closing",
        "_config",
        "_drained",
        "_handshake",
        "_inbox",
        "_overflowed",
        "_paused",
        "_pending",
        "_pending_count",
        "_server_state",
        "_task",
        "abort_at",
        "last_sent",
        "ping_sent_at",
        "registered",
        "resume_id",
        "transport",
    )

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any]
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state: dict[str, Any] | None = app_state
        self._handshake: H11Handshake | None = H11Handshake(ConnectionType.SERVER)
        self._task: asyncio.Task[None] | None = None
        self._inbox = b""
        self._bus: EventBus | None = None
        self._channel = ""
        self._pending: list[FramedBatch] | None = None
        self._pending_count = 0
        self._overflowed = False
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._closing = False
        self.transport: asyncio.Transport
        self.resume_id: int | None = None
        self.last_sent = 0.0
        self.ping_sent_at: float | None = None
        self.abort_at: float | None = None
        self.registered = False

    # -- asyncio ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server_state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        self._leave()
        self.keepalive.discard(self)
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._handshake_data(data)
        elif self._closing:
            return
        elif not self._inbox and len(data) == 6 and data[:2] == EMPTY_PONG:
            self.ping_sent_at = None  # the answer to our ping, alone: nothing to parse
        else:
            try:
                self._inbox = parse_frames(self._inbox + data, self._control)
            except ProtocolViolation as violation:
                self._inbox = b""
                self._close(violation.code, violation.reason, ABORT_AFTER)

    # -- uvicorn ----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Server stopping: 1012 naming the resume id; an upgrade not decided yet is cut."""
        if self._handshake is None:
            reason = resume_reason("server restart", self.resume_id)
            self._close(CLOSE_SERVICE_RESTART, reason, SHUTDOWN_PATIENCE)
        else:
            self.transport.close()

    # -- the bus (ports.bus.Sink) -----------------------------------------------------

    def deliver(self, batch: FramedBatch) -> None:
        pending = self._pending
        if pending is not None:
            pending.append(batch)
            self._pending_count += len(batch.messages)
            if self._pending_count > self.pending_limit:
                # Too far behind already: what is kept is dropped; `go_live` ends the
                # backlog and closes with 4008 (the 101 may not even be out yet).
                self._overflowed = True
                pending.clear()
                self._leave()
                self._wake_writer()
            return
        messages = batch.messages
        if messages[0].id > self.resume_id:  # type: ignore[operator]  # live: an int
            self.transport.write(batch.joined)
            self.resume_id = messages[-1].id
        else:
            self._write_newer(batch)
        self.last_sent = _now()
        if self._paused:
            self._too_slow()

    def bus_closed(self) -> None:
        self._bus = None
        self.shutdown()

    def missed(self) -> None:
        """Messages of the channel never reached this process (the engine dropped them and
        the archive lacks them): closed as a slow client is, 4008 naming the last id
        written, so that the client resumes and is told `X-Resume: partial`."""
        if self._pending is not None:  # still writing its backlog: as an overflow
            self._overflowed = True
            self._pending.clear()
            self._leave()
            self._wake_writer()
        else:
            self._cut_off("messages missed")

    # -- api/ws.py --------------------------------------------------------------------

    def join(self, bus: EventBus, channel: str) -> None:
        """Subscribe, keeping live batches aside until `go_live` (call before reading
        the history: whatever is published in between is then in both, and sent once)."""
        self._pending = []
        self._bus = bus
        self._channel = channel
        bus.subscribe(channel, self)

    async def go_live(self, backlog: list[WireMessage], sent: int) -> None:
        """After the accept: the backlog at the pace the client reads it, then the live
        batches kept meanwhile, then live delivery. `sent` is the id the client has."""
        self.resume_id = sent
        if self._closing:
            return
        self.transport.set_write_buffer_limits(high=self.write_limit)
        self.last_sent = _now()
        self.keepalive.add(self)
        for message in backlog:
            if not await self._writable():
                break
            if message.id > sent:
                self.transport.write(text_frame(message.data))
                self.resume_id = sent = message.id
        # Drained below the limit before going live, where being over it means too slow.
        if not await self._writable():
            if not self._closing:
                self._too_slow()
            return
        pending, self._pending = self._pending or [], None
        for batch in pending:
            self._write_newer(batch)
        self.last_sent = _now()
        if self._paused:
            self._too_slow()

    # -- internals --------------------------------------------------------------------

    async def _writable(self) -> bool:
        """Wait until the transport takes more (the backlog's flow control); False once
        the connection closes or fell too far behind meanwhile."""
        while self._paused and not (self._closing or self._overflowed):
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        return not (self._closing or self._overflowed)

    def _write_newer(self, batch: FramedBatch) -> None:
        """The frames of `batch` the client does not have yet (after a resume overlap)."""
        sent = self.resume_id or 0
        for message, data in zip(batch.messages, batch.frames, strict=True):
            if message.id > sent:
                self.transport.write(data)
                sent = message.id
        self.resume_id = sent

    def _too_slow(self) -> None:
        self._cut_off("too slow")

    def _cut_off(self, why: str) -> None:
        reason = resume_reason(why, self.resume_id)
        log.info("closing a WebSocket client (4008): %s", reason)
        self._close(CLOSE_TOO_SLOW, reason, self.drain_timeout)

    def _close(self, code: int, reason: str, patience: float) -> None:
        """Send a close frame after what is buffered; cut the connection after
        `patience` seconds if it has not drained by then."""
        self._leave()
        if self._closing:
            return
        self._closing = True
        self.closes[code] = self.closes.get(code, 0) + 1
        self._pending = None
        self._wake_writer()
        if self.transport.is_closing():
            return
        self.transport.write(close_frame(code, reason))
        self.transport.close()
        self.abort_at = _now() + patience
        if not self.registered:
            self.keepalive.add(self)
        self.keepalive.schedule(self, self.abort_at)

    def _leave(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.unsubscribe(self._channel, self)

    def _wake_writer(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PONG:
            self.ping_sent_at = None  # any pong will do: pings carry no payload to match
        elif opcode == OP_PING:
            self.transport.write(frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._leave()
            if not self._closing:  # the client starts the close: echo its code
                self._closing = True
                self.transport.write(frame(OP_CLOSE, payload[:2]))
            self.transport.close()

    # -- the keep-alive sweep (api/keepalive.py) ----------------------------------------

    def ping(self, now: float) -> None:
        if self._closing or self.transport.is_closing():
            return
        self.ping_sent_at = now
        self.last_sent = now
        self.transport.write(PING)

    def keepalive_expired(self, now: float) -> None:
        self.ping_sent_at = None
        reason = resume_reason("keep-alive timeout", self.resume_id)
        self._close(CLOSE_KEEPALIVE, reason, ABORT_AFTER)

    def abort(self) -> None:
        self.transport.abort()

    # -- the handshake: an ASGI call decides ------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None
        if self._task is not None:
            self._inbox += data  # frames sent before our answer: read after the accept
            if len(self._inbox) > MAX_CLIENT_FRAME:
                self.transport.abort()  # a client with that much to say before a 101
            return
        handshake.receive_data(data)
        try:
            for event in handshake.events():
                if isinstance(event, Request):
                    self._start_app(event)
        except RemoteProtocolError as error:
            self.transport.write(handshake.send(error.event_hint or RejectConnection()))
            self.transport.close()

    def _start_app(self, request: Request) -> None:
        config = self._config
        raw_path, _, query = request.target.partition("?")
        headers = [(b"host", request.host.encode())]
        headers += [(name.lower(), value) for name, value in request.extra_headers]
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "root_path": config.root_path,
            "path": config.root_path + unquote(raw_path),
            "raw_path": config.root_path.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": headers,
            "subprotocols": request.subprotocols,
            "state": (self._app_state or {}).copy(),
            "extensions": {"websocket.http.response": {}, SOCKET_EXTENSION: self},
        }
        self._app_state = None
        self._task = asyncio.get_running_loop().create_task(self._run_app(scope))

    async def _run_app(self, scope: dict[str, Any]) -> None:
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await asyncio.Future()  # nothing more to say before the decision
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            self._answer(scope, message)

        try:
            await self._config.loaded_app(scope, receive, send)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("WebSocket handshake of %s failed", scope["path"])
            self.transport.close()
        finally:
            self._task = None
            if self._handshake is not None and not self.transport.is_closing():
                self.transport.close()  # the app decided nothing: no answer is an answer

    def _answer(self, scope: dict[str, Any], message: dict[str, Any]) -> None:
        """The app's answer to the upgrade: written at once (the transport buffers it)."""
        handshake = self._handshake
        kind = message["type"]
        if handshake is None:
            raise RuntimeError(f"unexpected {kind!r} after the handshake")
        if self.transport.is_closing():
            return  # the client left while we decided; connection_lost ends the task
        if kind in ("websocket.accept", "websocket.close", "websocket.http.response.start"):
            status = {"websocket.accept": "[accepted]", "websocket.close": "403"}
            access_log.info(
                '%s - "WebSocket %s" %s',
                get_client_addr(scope),  # type: ignore[arg-type]
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                status.get(kind) or message["status"],
            )
        if kind == "websocket.accept":
            headers = self._server_state.default_headers + list(message.get("headers", []))
            accept = AcceptConnection(subprotocol=message.get("subprotocol"), extra_headers=headers)
            self.transport.write(handshake.send(accept))
            self._handshake = None
            if self._inbox:
                data, self._inbox = self._inbox, b""
                self.data_received(data)
        elif kind == "websocket.close":  # refused without a body (a path no route takes)
            self.transport.write(handshake.send(RejectConnection(status_code=403)))
            self.transport.close()
        elif kind == "websocket.http.response.start":
            reject = RejectConnection(
                status_code=message["status"], headers=list(message["headers"]), has_body=True
            )
            self.transport.write(handshake.send(reject))
        elif kind == "websocket.http.response.body":
            more = message.get("more_body", False)
            self.transport.write(handshake.send(RejectData(message["body"], not more)))
            if not more:
                self.transport.close()
        else:
            raise RuntimeError(f"unexpected {kind!r} during the handshake")


def pbx_socket_protocol(
    keepalive: KeepAlive, *, write_limit: int, pending_limit: int, drain_timeout: float
) -> type[PbxSocket]:
    """The protocol class for one server (`uvicorn.Config(ws=...)`), its connections
    sharing one keep-alive sweep and the limits of the settings."""
    return type(
        "PbxSocket",
        (PbxSocket,),
        {
            "__slots__": (),
            "keepalive": keepalive,
            "write_limit": write_limit,
            "pending_limit": pending_limit,
            "drain_timeout": drain_timeout,
            "closes": {},
        },
    )
