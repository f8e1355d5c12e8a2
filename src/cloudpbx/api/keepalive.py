"""WebSocket keep-alive: one periodic sweep pings the connections that have gone quiet.

Why not uvicorn's own pings: they come from two timers per connection and go out every
`ws_ping_interval` whatever else was sent, and the interval has to be short (clients such
as textalk/websocket give up after 5 s without data, and a ping counts as data). Here a
single task per server keeps the connections on a timing wheel (slots of a tenth of the
interval) and, each tick, looks only at those whose slot came up: a connection that was
sent nothing for `interval` seconds gets a ping, one that leaves a ping unanswered for
`timeout` seconds is closed with 1011, one that was busy is put back in the slot its
last message makes due, and one whose close frame did not drain in time is cut. A busy
connection is never pinged: its messages already are the keep-alive. The connections are
api/pbx_socket.py's; nothing here runs per connection between sweeps.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Protocol

log = logging.getLogger(__name__)

ABORT_AFTER = 2.0
"""Seconds a closed-by-timeout connection gets to flush its close frame before it is cut."""


def resume_reason(what: str, resume_id: int | None) -> str:
    """A close reason that names the id to resume from, when the connection has one."""
    return what if resume_id is None else f"{what}; resume with last_event_id={resume_id}"


class KeptAlive(Protocol):
    """What the sweep reads and calls on a connection."""

    registered: bool
    last_sent: float
    ping_sent_at: float | None
    abort_at: float | None

    def ping(self, now: float) -> None: ...

    def keepalive_expired(self, now: float) -> None: ...

    def abort(self) -> None: ...


class KeepAlive:
    """The open WebSocket connections of one server, and the sweep that keeps them alive."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.tick = interval / 10
        self._slots: dict[int, list[KeptAlive]] = {}
        self._live = 0
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return self._live

    def add(self, connection: KeptAlive) -> None:
        connection.registered = True
        self._live += 1
        self.schedule(connection, connection.last_sent + self.interval)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._run(), name="websocket-keepalive"
            )

    def discard(self, connection: KeptAlive) -> None:
        """Forget a connection; its slot entry is skipped when the slot comes up."""
        if connection.registered:
            connection.registered = False
            self._live -= 1

    def schedule(self, connection: KeptAlive, due: float) -> None:
        """Look at `connection` again at `due` (also sooner than its slot said before)."""
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

    def _check(self, connection: KeptAlive, now: float) -> None:
        if connection.abort_at is not None:  # closed by the server, not gone yet
            if now >= connection.abort_at:
                connection.abort()
            else:
                self.schedule(connection, connection.abort_at)
        elif connection.ping_sent_at is not None:  # waiting for a pong
            if now - connection.ping_sent_at >= self.timeout:
                connection.keepalive_expired(now)
                self.schedule(connection, now + ABORT_AFTER)
            else:
                self.schedule(connection, connection.ping_sent_at + self.timeout)
        elif now - connection.last_sent >= self.interval:
            connection.ping(now)
            self.schedule(connection, now + min(self.interval, self.timeout))
        else:
            self.schedule(connection, connection.last_sent + self.interval)
