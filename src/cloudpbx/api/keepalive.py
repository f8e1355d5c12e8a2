"""WebSocket keep-alive: one periodic sweep pings the connections that have gone quiet.

Why not uvicorn's own pings: they come from two timers per connection and go out every
`ws_ping_interval` whatever else was sent, and the interval has to be short (clients such
as textalk/websocket give up after 5 s without data, and a ping counts as data). Here a
single task per server walks a registry of connections every quarter interval; a
connection that was sent nothing for `interval` seconds gets a ping, and one that leaves
a ping unanswered for `timeout` seconds is closed with 1011. A busy connection is never
pinged: its messages already are the keep-alive. The ping frame is the same two bytes for
every connection (a server frame is not masked), written straight to the transport.

Closes that the server initiates here (keep-alive timeout, server shutdown) carry the id
the client should resume from, which the endpoint keeps in `resume_id` (reached through
the ASGI scope extension `RESUME_EXTENSION`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
ABORT_AFTER = 2.0
"""Seconds a closed-by-timeout connection gets to flush its close frame before it is cut."""


def resume_reason(what: str, resume_id: int | None) -> str:
    """A close reason that names the id to resume from, when the endpoint told us one."""
    return what if resume_id is None else f"{what}; resume with last_event_id={resume_id}"


class KeepAlive:
    """The registry of a server's open WebSocket connections and the sweep that pings them."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.tick = interval / 4
        self._connections: set[KeepAliveWSProtocol] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._connections)

    def add(self, connection: KeepAliveWSProtocol) -> None:
        self._connections.add(connection)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._run(), name="websocket-keepalive"
            )

    def discard(self, connection: KeepAliveWSProtocol) -> None:
        self._connections.discard(connection)

    async def _run(self) -> None:
        """Sweep until the last connection is gone (the next one starts it again)."""
        loop = asyncio.get_running_loop()
        while self._connections:
            await asyncio.sleep(self.tick)
            try:
                self.sweep(loop.time())
            except Exception:  # pragma: no cover - one bad connection must not stop pings
                log.exception("WebSocket keep-alive sweep failed")

    def sweep(self, now: float) -> None:
        quiet_since = now - self.interval
        expired = now - self.timeout
        for connection in tuple(self._connections):
            if connection.abort_at is not None:
                if now >= connection.abort_at:
                    connection.transport.abort()
            elif connection.ping_sent_at is not None:
                if connection.ping_sent_at <= expired:
                    connection.keepalive_expired(now)
            elif connection.last_sent <= quiet_since:
                connection.ping(now)


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
