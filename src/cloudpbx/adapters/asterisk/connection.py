"""The live AMI connection: a thin asyncio shell around the pure framing of `.framing`.

Two layers:

* `AmiSession` — one TCP session: banner, `Login`, actions with a timeout each (plain or
  list actions: `EventList: start` ... `<X>Complete`), every event handed over in wire
  order, `Logoff` and close. No retries, no reconnects.
* `AmiConnection` — one Asterisk server, kept connected: connect with a timeout, log in
  with an event filter, run the `on_connect` hook (the backend's resync), watch the peer
  with `Ping` (a peer that stops answering is dropped), reconnect with exponential backoff
  and jitter, report a refused login clearly (state `auth_failed`, retried slowly), and
  stop cleanly (`Logoff`, close, every task awaited).

Why not panoramisk (the usual asyncio AMI library): on Python 3.11 here it works, but it
never times out an action (a lost reply hangs the caller forever), never notices a peer
that went silent (a half-open TCP connection looks alive for hours), retries a refused
login in a tight loop without telling anyone, and has no clean stop (tasks left pending).
Wrapping it would mean re-implementing all four around its internals, and its parser is
not the one our transcript tests cover. This module is ~600 lines on top of the tested
`AmiParser`/`serialize_action`; see docs/asterisk.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cloudpbx.adapters.asterisk.framing import (
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    serialize_action,
)

__all__ = [
    "AmiActionError",
    "AmiAuthError",
    "AmiConnection",
    "AmiConnectionError",
    "AmiError",
    "AmiSession",
    "AmiTimeout",
    "ConnectionOptions",
    "ListResult",
]

log = logging.getLogger(__name__)

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
MessagesHandler = Callable[[list[AmiMessage]], None]
State = Literal["idle", "connecting", "connected", "disconnected", "auth_failed", "stopped"]

_READ_SIZE = 1 << 16


class AmiError(Exception):
    """Base of every AMI failure."""


class AmiConnectionError(AmiError):
    """Could not connect, or the connection is gone."""


class AmiAuthError(AmiError):
    """Asterisk refused the login (wrong user or secret, or not permitted from here)."""


class AmiTimeout(AmiError):
    """An action got no (complete) answer in time."""


class AmiActionError(AmiError):
    """Asterisk answered `Response: Error`; `response` is the whole answer."""

    def __init__(self, action: str, response: AmiMessage) -> None:
        self.action = action
        self.response = response
        self.message = response.value("Message")
        super().__init__(f"{action}: {self.message or 'Response: Error'}")


@dataclass(slots=True)
class ListResult:
    """The answer of a list action: the response and the events it listed (not the
    `...Complete` event, which is `complete`)."""

    response: AmiMessage
    events: list[AmiMessage]
    complete: AmiMessage | None


@dataclass(slots=True, eq=False)
class _Pending:
    action: str
    future: asyncio.Future[AmiMessage | ListResult]
    is_list: bool
    response: AmiMessage | None = None
    events: list[AmiMessage] = field(default_factory=list)


class AmiSession:
    """One logged-in (or logging-in) AMI TCP session.

    Every event read is passed to `on_messages` (one call per read from the socket, in
    wire order) before the action it may complete is resolved, so a caller that awaits a
    list action sees its events already handed over. Responses are not passed on.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_messages: MessagesHandler | None = None,
        name: str = "ami",
    ) -> None:
        self.name = name
        self._reader = reader
        self._writer = writer
        self._on_messages = on_messages
        self._parser = AmiParser()
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{name}-{random.getrandbits(32):08x}"
        self._closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._banner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read(), name=f"{name}-reader"
        )
        self.last_read = time.monotonic()

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        wait: float = 5.0,
        on_messages: MessagesHandler | None = None,
        name: str = "ami",
    ) -> AmiSession:
        """Connect and wait for the `Asterisk Call Manager/...` banner, `wait` seconds at most."""
        try:
            async with asyncio.timeout(wait):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise AmiConnectionError(
                f"{host}:{port}: no TCP connection within {wait:g} s"
            ) from None
        except OSError as exc:
            raise AmiConnectionError(f"{host}:{port}: {exc.strerror or exc}") from exc
        session = cls(reader, writer, on_messages=on_messages, name=name)
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(session._banner)
        except TimeoutError:
            await session.abort()
            raise AmiConnectionError(
                f"{host}:{port}: no AMI banner within {wait:g} s (not an AMI port?)"
            ) from None
        except AmiConnectionError:
            await session.abort()
            raise
        return session

    @property
    def banner(self) -> str | None:
        return self._parser.banner

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> str:
        """Until the connection is gone; returns why."""
        return await asyncio.shield(self._closed)

    # -- actions -----------------------------------------------------------------------------

    def next_action_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def login(
        self, username: str, secret: str, *, events: str = "on", wait: float = 5.0
    ) -> AmiMessage:
        """`Action: Login` with `Events` (a class filter such as `system,call,agent,cdr`).

        `AmiAuthError` when Asterisk says `Authentication failed` (wrong user or secret, or
        not permitted from here); `AmiConnectionError` for other refusals."""
        try:
            return await self.action(
                "Login", {"Username": username, "Secret": secret, "Events": events}, wait=wait
            )
        except AmiActionError as exc:
            message = exc.message or "Response: Error"
            if "authentication" in message.lower():
                raise AmiAuthError(f"AMI login as {username!r} refused: {message}") from None
            # `Asterisk is shutting down` (seen in the lab during a restart) and the like:
            # not the secret's fault; retried with the usual backoff.
            raise AmiConnectionError(f"AMI login as {username!r} not possible: {message}") from None

    async def action(
        self,
        action: str,
        headers: Headers = (),
        *,
        wait: float = 5.0,
        action_id: str | None = None,
        check: bool = True,
    ) -> AmiMessage:
        """Send an action, return its response; `AmiActionError` on `Response: Error`
        (unless `check=False`), `AmiTimeout` when no answer came within `wait` seconds."""
        result = await self._send(action, headers, wait, action_id, is_list=False)
        assert isinstance(result, AmiMessage)
        if check and result.response == "Error":
            raise AmiActionError(action, result)
        return result

    async def list_action(
        self,
        action: str,
        headers: Headers = (),
        *,
        wait: float = 10.0,
        action_id: str | None = None,
    ) -> ListResult:
        """A list action: the response, the events carrying its ActionID, up to the one
        with `EventList: Complete`. `Response: Error` raises `AmiActionError` (for example
        `ConfbridgeListRooms` with no conference: `No active conferences.`)."""
        result = await self._send(action, headers, wait, action_id, is_list=True)
        assert isinstance(result, ListResult)
        return result

    async def ping(self, *, wait: float = 5.0) -> None:
        await self.action("Ping", wait=wait)

    async def _send(
        self, action: str, headers: Headers, wait: float, action_id: str | None, *, is_list: bool
    ) -> AmiMessage | ListResult:
        if self.closed:
            raise AmiConnectionError(f"{action}: the AMI connection is closed")
        action_id = action_id or self.next_action_id()
        data = serialize_action(action, headers, action_id=action_id)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AmiMessage | ListResult] = loop.create_future()
        if action_id in self._pending:
            raise ValueError(f"ActionID {action_id!r} is already in use")
        self._pending[action_id] = _Pending(action, future, is_list)
        try:
            async with asyncio.timeout(wait):
                self._writer.write(data)
                await self._writer.drain()
                return await future
        except TimeoutError:
            raise AmiTimeout(f"{action}: no answer within {wait:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise AmiConnectionError(f"{action}: {exc}") from exc
        finally:
            self._pending.pop(action_id, None)

    # -- closing -----------------------------------------------------------------------------

    async def close(self, *, wait: float = 2.0) -> None:
        """`Logoff` (waiting up to `wait` seconds for the Goodbye), then close the socket."""
        if not self.closed:
            with contextlib.suppress(AmiError, ValueError):
                await self.action("Logoff", wait=wait, check=False)
        await self._shutdown("closed by us", wait=wait)

    async def abort(self) -> None:
        """Drop the connection without a word (a silent or broken peer)."""
        self._writer.transport.abort()
        await self._shutdown("aborted by us", wait=0.5)

    async def _shutdown(self, reason: str, *, wait: float) -> None:
        self._finish(reason)
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(wait):
                await self._writer.wait_closed()
        if not self._reader_task.done():
            self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task

    def _finish(self, reason: str) -> None:
        if not self._closed.done():
            self._closed.set_result(reason)
        if not self._banner.done():
            self._banner.set_exception(AmiConnectionError(reason))
            self._banner.exception()  # retrieved: nobody may be waiting for it
        error = AmiConnectionError(f"AMI connection lost: {reason}")
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()

    # -- reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        reason = "closed by Asterisk"
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                self.last_read = time.monotonic()
                self._dispatch(self._parser.feed(data))
                if self._parser.banner is not None and not self._banner.done():
                    self._banner.set_result(self._parser.banner)
        except AmiProtocolError as exc:
            reason = f"protocol error: {exc}"
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        except asyncio.CancelledError:
            reason = "closed by us"
            raise
        finally:
            self._finish(reason)
            self._writer.close()

    def _dispatch(self, messages: list[AmiMessage]) -> None:
        events: list[AmiMessage] = []
        done: list[tuple[_Pending, AmiMessage | ListResult]] = []
        for msg in messages:
            action_id = msg.action_id
            pending = self._pending.get(action_id) if action_id is not None else None
            if msg.event is None:
                if pending is None:
                    continue
                if pending.is_list and msg.response == "Success":
                    pending.response = msg
                    if msg.value("EventList").lower() != "start":
                        # A list action answered without a list: nothing follows.
                        done.append((pending, ListResult(msg, [], None)))
                    continue
                if pending.is_list and msg.response == "Error":
                    done.append((pending, msg))
                    continue
                done.append((pending, msg))
                continue
            events.append(msg)
            if pending is not None and pending.is_list and pending.response is not None:
                if msg.value("EventList").lower() == "complete":
                    done.append((pending, ListResult(pending.response, pending.events, msg)))
                else:
                    pending.events.append(msg)
        if events and self._on_messages is not None:
            try:
                self._on_messages(events)
            except Exception:
                log.exception("%s: the event handler failed", self.name)
        for pending, result in done:
            if pending.future.done():
                continue
            if isinstance(result, AmiMessage) and pending.is_list and result.response == "Error":
                pending.future.set_exception(AmiActionError(pending.action, result))
            else:
                pending.future.set_result(result)


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """How `AmiConnection` connects and keeps the connection (seconds)."""

    connect_timeout: float = 5.0
    action_timeout: float = 5.0
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    auth_retry: float = 60.0
    """After a refused login, retry this often (0: never; the state stays `auth_failed`)."""
    jitter: float = 0.2
    """Each reconnect delay is shortened by a random share up to this."""
    events: str = "system,call,agent,cdr"
    """The `Events` filter of the login (`off`, `on`, or classes)."""


OnConnect = Callable[[AmiSession], Awaitable[None]]
OnDisconnect = Callable[[str], None]


class AmiConnection:
    """One Asterisk server, kept connected until `stop`; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        name: str = "asterisk",
        options: ConnectionOptions | None = None,
        on_messages: MessagesHandler | None = None,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.name = name
        self.options = options or ConnectionOptions()
        self._on_messages = on_messages
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._rng = rng or random.Random()
        self.state: State = "idle"
        self.error: str | None = None
        self.since = time.time()
        self.connects = 0
        self.failures = 0
        self.ping_rtt: float | None = None
        """Seconds the last keep-alive Ping took to be answered: the lag of Asterisk's
        manager (its queue towards us, and the network), measured without clock sync."""
        self.session: AmiSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._logged_error: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self.state == "connected" and self.session is not None and not self.session.closed

    def health(self) -> dict[str, Any]:
        """What `/healthz` shows for this server."""
        return {
            "name": self.name,
            "address": self.address,
            "state": self.state,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "error": self.error,
            "connects": self.connects,
            "ping_rtt": self.ping_rtt,
        }

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"{self.name}-supervisor"
        )

    async def wait_connected(self, wait: float) -> bool:
        """Until the first resync is done (True) or `wait` seconds passed (False)."""
        try:
            async with asyncio.timeout(wait):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, *, wait: float = 2.0) -> None:
        """Log off (waiting `wait` s at most for the Goodbye), close, and wait for every
        task; idempotent."""
        self._stopping.set()
        task, self._task = self._task, None
        session = self.session
        if session is not None and not session.closed:
            await session.close(wait=wait)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_state("stopped", None)

    async def action(
        self,
        action: str,
        headers: Headers = (),
        *,
        wait: float | None = None,
        action_id: str | None = None,
    ) -> AmiMessage:
        """An action on the current session (`wait`: default `action_timeout`);
        `AmiConnectionError` when not connected."""
        session = self.session
        if session is None or session.closed or self.state != "connected":
            raise AmiConnectionError(f"{self.name} ({self.address}) is not connected: {self.error}")
        limit = self.options.action_timeout if wait is None else wait
        return await session.action(action, headers, wait=limit, action_id=action_id)

    # -- the loop ----------------------------------------------------------------------------

    def _set_state(self, state: State, error: str | None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state = state
        self.error = error

    def _backoff(self, attempt: int) -> float:
        opts = self.options
        delay = min(opts.reconnect_max, opts.reconnect_min * (2 ** min(attempt, 30)))
        return float(delay * (1 - opts.jitter * self._rng.random()))

    def _complain(self, error: str, level: int = logging.WARNING) -> None:
        """Log a failure once until it changes (a dead server is not a log line a second)."""
        if error != self._logged_error:
            log.log(level, "%s (%s): %s", self.name, self.address, error)
            self._logged_error = error

    async def _supervise(self) -> None:
        attempt = 0
        opts = self.options
        while not self._stopping.is_set():
            self._set_state("connecting", self.error)
            delay: float | None
            try:
                session = await AmiSession.open(
                    self.host,
                    self.port,
                    wait=opts.connect_timeout,
                    on_messages=self._on_messages,
                    name=self.name,
                )
            except AmiConnectionError as exc:
                self.failures += 1
                self._set_state("disconnected", str(exc))
                self._complain(str(exc))
                delay = self._backoff(attempt)
                attempt += 1
            else:
                delay = await self._run_session(session)
                if delay is None:
                    attempt += 1
                    delay = self._backoff(attempt - 1)
                else:
                    attempt = 0
            if delay is None or self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        if self.state != "auth_failed":
            self._set_state("stopped", self.error)

    async def _run_session(self, session: AmiSession) -> float | None:
        """Log in, resync, watch. Returns the delay before the next attempt (None: backoff)."""
        opts = self.options
        self.session = session
        try:
            try:
                await session.login(
                    self.username, self._secret, events=opts.events, wait=opts.action_timeout
                )
            except AmiAuthError as exc:
                message = f"{exc} (user {self.username!r} on {self.address}: check the secret)"
                self.failures += 1
                self._set_state("auth_failed", message)
                self._complain(message, logging.ERROR)
                await session.close(wait=1.0)
                if opts.auth_retry <= 0:
                    self._stopping.set()  # give up: the state stays auth_failed
                return opts.auth_retry
            except AmiError as exc:
                self.failures += 1
                self._set_state("disconnected", f"login: {exc}")
                self._complain(f"login: {exc}")
                return None
            self.connects += 1
            self._set_state("connected", None)
            if self._logged_error is not None:
                log.info("%s (%s): connected again", self.name, self.address)
            self._logged_error = None
            if self._on_connect is not None:
                try:
                    await self._on_connect(session)
                except AmiError as exc:
                    self._set_state("disconnected", f"resync: {exc}")
                    self._complain(f"resync failed, reconnecting: {exc}")
                    return None
            self._ready.set()
            reason = await self._watch(session)
            if not self._stopping.is_set():
                self._set_state("disconnected", reason)
                self._complain(reason)
            return opts.reconnect_min * (1 - opts.jitter * self._rng.random())
        finally:
            self.session = None
            if not session.closed:
                await session.abort()
            if self._on_disconnect is not None and not self._stopping.is_set():
                try:
                    self._on_disconnect(self.error or "disconnected")
                except Exception:
                    log.exception("%s: the disconnect handler failed", self.name)

    async def _watch(self, session: AmiSession) -> str:
        """Ping every `ping_interval`; a missing Pong drops the session. Returns why it ended."""
        opts = self.options
        closed = asyncio.ensure_future(session.wait_closed())
        try:
            while True:
                done, _ = await asyncio.wait({closed}, timeout=opts.ping_interval)
                if done:
                    return f"connection lost: {closed.result()}"
                try:
                    sent = time.monotonic()
                    await session.ping(wait=opts.ping_timeout)
                    self.ping_rtt = time.monotonic() - sent
                except AmiTimeout:
                    await session.abort()
                    return f"no answer to Ping within {opts.ping_timeout:g} s: peer is silent"
                except AmiError as exc:
                    if session.closed:
                        return f"connection lost: {await session.wait_closed()}"
                    return f"Ping failed: {exc}"
        finally:
            closed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closed
