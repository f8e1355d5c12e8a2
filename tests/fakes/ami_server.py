"""A fake Asterisk Manager Interface on 127.0.0.1, speaking the real wire protocol.

It is what the lab's Asterisk 22 showed (`tests/data/ami/`, /work/shared/lab/ASTERISK.md):
the `Asterisk Call Manager/11.0.0` banner, `Login` with an `Events` class filter (and the
session closed after `Authentication failed`), `Ping`, `Logoff` (`Goodbye`), list actions
answered `EventList: start` ... `<Action>Complete`, `ConfbridgeListRooms` answering
`No active conferences.` when there are none, `Originate`. Its state (the listings) starts
as the lab's `initial_state` transcript; tests change it, `replay` a lab transcript's
events to every client, and break things: a wrong secret, a silent peer, dropped
connections, a closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from cloudpbx.adapters.asterisk.framing import AmiMessage, AmiParser, serialize_action

DATA = Path(__file__).resolve().parent.parent / "data" / "ami"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"

LIST_ACTIONS = {
    "CoreShowChannels": "Channels will follow",
    "DeviceStateList": "Device State Changes will follow",
    "ExtensionStateList": "Extension Statuses will follow",
    "QueueStatus": "Queue status will follow",
}
DEVICE_TEXT = {0: "NOT_INUSE", 1: "INUSE", 2: "BUSY", 4: "UNAVAILABLE", 8: "RINGING", 16: "ONHOLD"}
STATUS_TEXT = {0: "Idle", 1: "InUse", 2: "Busy", 4: "Unavailable", 8: "Ringing", 16: "Hold"}

OriginateHandler = Callable[["FakeSession", AmiMessage], Awaitable[list[tuple[str, str]]]]


def encode(headers: Iterable[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n"


def messages(raw: bytes) -> list[AmiMessage]:
    return AmiParser().feed(raw)


def without_action_id(msg: AmiMessage) -> AmiMessage:
    return AmiMessage([(k, v) for k, v in msg.headers if k != "ActionID"])


def lab_listings() -> dict[str, list[AmiMessage]]:
    """The listings of the lab's `initial_state` transcript, by action (ActionIDs dropped)."""
    sent = messages(b"Banner\r\n\r\n" + (DATA / "initial_state.sent.txt").read_bytes())
    action_of = {m.value("ActionID"): m.value("Action") for m in sent if "Action" in m}
    out: dict[str, list[AmiMessage]] = {name: [] for name in LIST_ACTIONS}
    for msg in messages((DATA / "initial_state.txt").read_bytes()):
        action = action_of.get(msg.value("ActionID"))
        if action in out and msg.event and msg.value("EventList") != "Complete":
            out[action].append(without_action_id(msg))
    return out


def transcript_bursts(scenario: str) -> list[tuple[float, bytes]]:
    """What Asterisk sent in a lab scenario, one chunk per millisecond: (t, bytes)."""
    with (DATA / f"{scenario}.jsonl").open(encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    incoming = [row for row in rows if row["dir"] == "in"]
    return [
        (float(t), "".join(str(row["raw"]) for row in group).encode())
        for t, group in groupby(incoming, key=lambda row: row["t"])
    ]


def renamed(data: bytes, pbx: str) -> bytes:
    """The lab's PBX `MojaCentrala` as another tenant (endpoints, queue, room, uniqueids)."""
    data = data.replace(b"MojaCentrala", pbx.encode())
    data = data.replace(b"Kolejka1", f"{pbx}-Kolejka".encode())
    data = data.replace(b"SesjaRady", f"{pbx}-Sala".encode())
    return data.replace(b"17958", str(sum(map(ord, pbx)) % 90000 + 10000).encode())


def _classes(msg: AmiMessage) -> set[str]:
    return {c.strip().lower() for c in msg.value("Privilege").split(",")} - {"all", ""}


@dataclass(eq=False)
class FakeSession:
    """One client connection."""

    server: FakeAmi
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    events: str | None = None
    """The `Events` filter of its login; None before a successful login."""
    closed: bool = False

    def wants(self, msg: AmiMessage) -> bool:
        if self.events is None or self.events.lower() == "off":
            return False
        if self.events.lower() == "on":
            return True
        allowed = {c.strip().lower() for c in self.events.split(",")}
        return bool(_classes(msg) & allowed)

    async def send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def reply(self, action: AmiMessage, headers: Iterable[tuple[str, str]]) -> None:
        pairs = list(headers)
        pairs.insert(1, ("ActionID", action.value("ActionID")))
        await self.send(encode(pairs))

    async def event(self, msg: AmiMessage, action_id: str | None = None) -> None:
        headers = list(msg.headers)
        if action_id is not None:
            headers.append(("ActionID", action_id))
        await self.send(encode(headers))

    def abort(self) -> None:
        self.closed = True
        self.writer.transport.abort()


@dataclass(eq=False)
class FakeAmi:
    """The fake server. `await start()`, then connect to `port`; `await close()`."""

    username: str = "api"
    secret: str = "apisecret"
    listings: dict[str, list[AmiMessage]] = field(default_factory=lab_listings)
    rooms: dict[str, list[AmiMessage]] = field(default_factory=dict)
    """Conference → its `ConfbridgeList` events (no rooms: `No active conferences.`)."""
    silent: bool = False
    """Read actions, answer nothing (a peer that hangs)."""
    ignore: set[str] = field(default_factory=set)
    """Actions never answered."""
    on_originate: OriginateHandler | None = None
    login_error: str | None = None
    """Refuse every Login with this message (`Asterisk is shutting down`)."""
    port: int = 0
    actions: list[AmiMessage] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    """(Events header, accepted) of every Login."""
    connects: list[float] = field(default_factory=list)
    """loop.time() of every accepted TCP connection."""
    sessions: list[FakeSession] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop_listening(self) -> None:
        """Close the port and every connection (Asterisk is down)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.drop()

    async def close(self) -> None:
        await self.stop_listening()

    def drop(self) -> None:
        """Cut every client connection (no Goodbye)."""
        for session in self.sessions:
            session.abort()
        self.sessions.clear()

    @property
    def live(self) -> list[FakeSession]:
        return [s for s in self.sessions if not s.closed and s.events is not None]

    def sent(self, action: str) -> list[AmiMessage]:
        return [a for a in self.actions if a.value("Action").lower() == action.lower()]

    # -- pushing events ----------------------------------------------------------------------

    async def emit(self, data: bytes | Iterable[AmiMessage]) -> None:
        """Send events to every logged-in client whose filter takes them."""
        msgs = messages(data) if isinstance(data, bytes) else list(data)
        for session in self.live:
            chunk = b"".join(encode(m.headers) for m in msgs if session.wants(m))
            if chunk:
                await session.send(chunk)

    async def replay(
        self,
        scenario: str,
        *,
        speed: float | None = None,
        pbx: str | None = None,
        action_ids: dict[str, str] | None = None,
    ) -> None:
        """Send a lab scenario's events (not its responses, nor listing events of the lab's
        own actions unless `action_ids` renames them) burst by burst."""
        previous: float | None = None
        for t, raw in transcript_bursts(scenario):
            if pbx is not None:
                raw = renamed(raw, pbx)
            keep: list[AmiMessage] = []
            for msg in messages(raw):
                if msg.event is None:
                    continue
                action_id = msg.action_id
                if action_id is not None:
                    if action_ids is None or action_id not in action_ids:
                        continue
                    msg = AmiMessage(
                        [(k, action_ids[action_id] if k == "ActionID" else v) for k, v in msg]
                    )
                keep.append(msg)
            if speed and previous is not None and t > previous:
                await asyncio.sleep((t - previous) / speed)
            previous = t
            if keep:
                await self.emit(keep)
                await asyncio.sleep(0)

    # -- changing state ----------------------------------------------------------------------

    def set_extension(self, exten: str, status: int, *, pbx: str = "MojaCentrala") -> None:
        """An extension's state in ExtensionStateList and DeviceStateList."""
        device = f"PJSIP/{pbx}-{exten}"

        def update(
            items: list[AmiMessage], match: Callable[[AmiMessage], bool], new: AmiMessage
        ) -> None:
            for index, msg in enumerate(items):
                if match(msg):
                    items[index] = new
                    return
            items.append(new)

        update(
            self.listings["ExtensionStateList"],
            lambda m: m.value("Exten") == exten and m.value("Context") == pbx,
            AmiMessage(
                [
                    ("Event", "ExtensionStatus"),
                    ("Exten", exten),
                    ("Context", pbx),
                    ("Hint", device),
                    ("Status", str(status)),
                    ("StatusText", STATUS_TEXT[status]),
                ]
            ),
        )
        update(
            self.listings["DeviceStateList"],
            lambda m: m.value("Device") == device,
            AmiMessage(
                [("Event", "DeviceStateChange"), ("Device", device), ("State", DEVICE_TEXT[status])]
            ),
        )

    # -- serving -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = FakeSession(self, reader, writer)
        self.sessions.append(session)
        self.connects.append(asyncio.get_running_loop().time())
        parser = AmiParser()
        try:
            await session.send(BANNER)
            while not session.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for action in parser.feed(data):
                    self.actions.append(action)
                    if self.silent or action.value("Action") in self.ignore:
                        continue
                    await self._handle(session, action)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            session.closed = True
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, session: FakeSession, action: AmiMessage) -> None:
        name = action.value("Action")
        lower = name.lower()
        if lower == "login":
            await self._login(session, action)
            return
        if session.events is None:
            await session.reply(action, [("Response", "Error"), ("Message", "Permission denied")])
            return
        if lower == "ping":
            await session.reply(
                action,
                [("Response", "Success"), ("Ping", "Pong"), ("Timestamp", "1795838273.000000")],
            )
        elif lower == "logoff":
            await session.reply(
                action, [("Response", "Goodbye"), ("Message", "Thanks for all the fish.")]
            )
            session.abort()
        elif name in LIST_ACTIONS and name in self.listings:
            await self._list(session, action, name, LIST_ACTIONS[name], self.listings[name])
        elif lower == "confbridgelistrooms":
            if not self.rooms:
                await self._no_conferences(session, action)
                return
            rooms = [
                AmiMessage(
                    [
                        ("Event", "ConfbridgeListRooms"),
                        ("Conference", room),
                        ("Parties", str(len(members))),
                        ("Marked", "0"),
                        ("Locked", "No"),
                        ("Muted", "No"),
                    ]
                )
                for room, members in self.rooms.items()
            ]
            await self._list(session, action, name, "Confbridges will follow", rooms)
        elif lower == "confbridgelist":
            members = self.rooms.get(action.value("Conference"))
            if not members:
                await self._no_conferences(session, action)
                return
            await self._list(session, action, name, "Confbridge user list will follow", members)
        elif lower == "originate":
            if self.on_originate is not None:
                headers = await self.on_originate(session, action)
            else:
                headers = [("Response", "Success"), ("Message", "Originate successfully queued")]
            await session.reply(action, headers)
        else:
            await session.reply(
                action, [("Response", "Error"), ("Message", "Invalid/unknown command")]
            )

    async def _login(self, session: FakeSession, action: AmiMessage) -> None:
        events = action.value("Events") or "on"
        ok = action.value("Username") == self.username and action.value("Secret") == self.secret
        ok = ok and self.login_error is None
        self.logins.append((events, ok))
        if not ok:
            message = self.login_error or "Authentication failed"
            await session.reply(action, [("Response", "Error"), ("Message", message)])
            session.abort()  # Asterisk ends the session after a refused login
            return
        session.events = events
        await session.reply(
            action, [("Response", "Success"), ("Message", "Authentication accepted")]
        )
        for msg in (
            AmiMessage(
                [
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", "9"),
                    ("LastReload", "9"),
                    ("Status", "Fully Booted"),
                ]
            ),
            AmiMessage(
                [
                    ("Event", "TestEvent"),
                    ("Privilege", "reporting,all"),
                    ("Type", "StateChange"),
                    ("State", "AMI_LOGIN"),
                ]
            ),
        ):
            if session.wants(msg):
                await session.event(msg)

    async def _list(
        self,
        session: FakeSession,
        action: AmiMessage,
        name: str,
        text: str,
        items: list[AmiMessage],
    ) -> None:
        action_id = action.value("ActionID")
        chunk = [
            encode(
                [
                    ("Response", "Success"),
                    ("ActionID", action_id),
                    ("EventList", "start"),
                    ("Message", text),
                ]
            )
        ]
        chunk += [encode([*item.headers, ("ActionID", action_id)]) for item in items]
        chunk.append(
            encode(
                [
                    ("Event", f"{name}Complete"),
                    ("ActionID", action_id),
                    ("EventList", "Complete"),
                    ("ListItems", str(len(items))),
                ]
            )
        )
        await session.send(b"".join(chunk))

    async def _no_conferences(self, session: FakeSession, action: AmiMessage) -> None:
        await session.reply(action, [("Response", "Error"), ("Message", "No active conferences.")])


def action_bytes(action: str, **headers: str) -> bytes:
    return serialize_action(action, headers)
