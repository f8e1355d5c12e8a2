"""WebSocket keep-alive: one periodic sweep pings the connections that have gone quiet.

Why not uvicorn's own pings: they come from two timers per connection and go out every
`ws_ping_interval` whatever else was sent, and the interval has to be short (clients such
as textalk/websocket give up after 5 s without data, and a ping counts as data). Here a
single task per server keeps the connections on a timing wheel (slots of a tenth of the
interval) and, each tick, looks only at those whose slot came up: a connection that was
sent nothing for `interval` seconds gets a ping, one that leaves a ping unanswered for
`timeout` seconds is closed with 1011, one that was busy is put back in the slot its
last message makes due. A busy connection is never pinged: its messages already are the
keep-alive. The ping frame is the same two bytes for every connection (a server frame is
not masked), written straight to the transport; the answer, a client's empty pong, is
recognised without the frame parser when it arrives alone and between frames.

Closes that the server initiates here (keep-alive timeout, server shutdown) carry the id
the client should resume from, which the endpoint keeps in `resume_id` (reached through
the ASGI scope extension `RESUME_EXTENSION`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from uvicorn.server import ServerState
from wsproto import events
from wsproto.utilities import LocalProtocolError

log = logging.getLogger(__name__)

RESUME_EXTENSION = "cloudpbx.resume"
"""Scope extension: the connection object whose `resume_id` the endpoint keeps current."""
PING_FRAME = b"\x89\x00"
"""FIN + opcode 9 (ping), unmasked, empty payload."""
EMPTY_PONG = b"\x8a\x80"
"""FIN + opcode 10 (pong), masked, empty payload: 4 mask bytes follow, nothing else."""
ABORT_AFTER = 2.0
"""Seconds a closed-by-timeout connection gets to flush its close frame before it is cut."""


def resume_reason(what: str, resume_id: int | None) -> str:
    """A close reason that names the id to resume from, when the endpoint told us one."""
    return what if resume_id is None else f"{what}; resume with last_event_id={resume_id}"


class KeepAlive:
    """The open WebSocket connections of one server, and the sweep that keeps them alive."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.tick = interval / 10
        self._slots: dict[int, list[KeepAliveWSProtocol]] = {}
        self._live = 0
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return self._live

    def add(self, connection: KeepAliveWSProtocol) -> None:
        connection.registered = True
        self._live += 1
        self._schedule(connection, connection.last_sent + self.interval)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._run(), name="websocket-keepalive"
            )

    def discard(self, connection: KeepAliveWSProtocol) -> None:
        """Forget a connection; its slot entry is skipped when the slot comes up."""
        if connection.registered:
            connection.registered = False
            self._live -= 1

    def _schedule(self, connection: KeepAliveWSProtocol, due: float) -> None:
        self._slots.setdefault(math.ceil(due / self.tick), []).append(connection)

    async def _run(self) -> None:
        """Sweep until the last connection is gone (the next one starts it again)."""
        loop = asyncio.get_running_loop()
        while self._live:
            await asyncio.sleep(self.tick)
            try:
                self.sweep(loop.time())
            except Exception:  # pragma: no cover - one bad connection must not stop pings
                log.exception("WebSocket keep-alive sweep failed")
        self._slots.clear()

    def sweep(self, now: float) -> None:
        current = math.floor(now / self.tick)
        for slot in [slot for slot in self._slots if slot <= current]:
            for connection in self._slots.pop(slot):
                if connection.registered:
                    self._check(connection, now)

    def _check(self, connection: KeepAliveWSProtocol, now: float) -> None:
        if connection.abort_at is not None:  # closed for a timeout, not gone yet
            if now >= connection.abort_at:
                connection.transport.abort()
            else:
                self._schedule(connection, connection.abort_at)
        elif connection.ping_sent_at is not None:  # waiting for a pong
            if now - connection.ping_sent_at >= self.timeout:
                connection.keepalive_expired(now)
                self._schedule(connection, now + ABORT_AFTER)
            else:
                self._schedule(connection, connection.ping_sent_at + self.timeout)
        elif now - connection.last_sent >= self.interval:
            connection.ping(now)
            self._schedule(connection, now + min(self.interval, self.timeout))
        else:
            self._schedule(connection, connection.last_sent + self.interval)


class KeepAliveWSProtocol(WSProtocol):
    """uvicorn's wsproto protocol, kept alive by a shared `KeepAlive` sweep.

    uvicorn builds one per connection; `keepalive_protocol` binds the class to its sweep.
    """

    keepalive: KeepAlive

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.last_sent = 0.0
        self.ping_sent_at: float | None = None  # type: ignore[assignment]  # None: no ping out
        self.abort_at: float | None = None
        self.resume_id: int | None = None
        self.registered = False

    def handle_connect(self, event: events.Request) -> None:
        super().handle_connect(event)
        self.scope["extensions"][RESUME_EXTENSION] = self  # type: ignore[assignment]

    # uvicorn calls these two on accept and on connection loss / shutdown.
    def start_keepalive(self) -> None:
        self.last_sent = self.loop.time()
        self.keepalive.add(self)

    def stop_keepalive(self) -> None:
        self.keepalive.discard(self)

    async def send(self, message: Any) -> None:
        await super().send(message)
        self.last_sent = self.loop.time()

    def ping(self, now: float) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self.ping_sent_at = now
        self.last_sent = now
        self.transport.write(PING_FRAME)

    def data_received(self, data: bytes) -> None:
        if data[:2] == EMPTY_PONG and len(data) == 6 and self._between_frames():
            self.ping_sent_at = None  # the answer to our ping, alone: skip the parser
            return
        super().data_received(data)

    def _between_frames(self) -> bool:
        """Whether wsproto holds no part of a frame (else the bytes must go through it)."""
        if not self.handshake_complete or self.close_sent:
            return False
        try:
            decoder = self.conn.connection._proto._frame_decoder  # type: ignore[union-attr]
            return decoder.header is None and not len(decoder.buffer)
        except AttributeError:  # pragma: no cover - another wsproto: always parse
            return False

    def handle_pong(self, event: events.Pong) -> None:
        self.ping_sent_at = None  # any pong will do: pings carry no payload to match

    def keepalive_expired(self, now: float) -> None:
        """No pong in time: close with 1011 naming the resume id, cut it if it won't drain."""
        self.ping_sent_at = None
        self.abort_at = now + ABORT_AFTER
        reason = resume_reason("keep-alive timeout", self.resume_id)
        self._send_close(1011, reason)
        self.transport.close()

    def shutdown(self) -> None:
        """Server stopping: 1012 with the resume id (uvicorn's own 1012 has no reason)."""
        if self.handshake_complete and not self.response_started and not self.close_sent:
            self.stop_keepalive()
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1012})
            self._send_close(1012, resume_reason("server restart", self.resume_id))
            self.transport.close()
            return
        super().shutdown()

    def _send_close(self, code: int, reason: str) -> None:
        self.close_sent = True
        with contextlib.suppress(LocalProtocolError):  # the peer's close came first
            frame = self.conn.send(events.CloseConnection(code=code, reason=reason))
            if not self.transport.is_closing():
                self.transport.write(frame)


def keepalive_protocol(interval: float, timeout: float) -> type[KeepAliveWSProtocol]:
    """A protocol class for one uvicorn server, its connections sharing one sweep."""
    return type(
        "KeepAliveWSProtocol",
        (KeepAliveWSProtocol,),
        {"keepalive": KeepAlive(interval, timeout)},
    )
