"""Keep-alive pings and server-initiated closes, with a client that behaves like the
provider's PHP sample on textalk/websocket 1.5.

That client reads with a 5 s timeout and `die()`s on any exception, timeouts included; it
answers pings (a ping is data, so it also resets the timeout), and it keeps only the last
event type of each message (`Event::mapObject`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from cloudpbx.domain.events import Event, ExtStatus, QueueMember, Subscriber
from cloudpbx.domain.states import DeviceState, MemberStatus
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running
from tests.test_ws import a_path, client_frame, publish, raw_ws, read_frame, recv_json, ws_connect

READ_TIMEOUT = 5.0
"""textalk/websocket 1.5's default timeout, in seconds, for each read."""


@dataclass
class TextalkLikeRun:
    """What the client saw: the event type it kept of each message, pings, how it ended."""

    kept: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    pings: int = 0
    died: str | None = None


class TextalkLikeClient:
    """A blocking RFC 6455 client with textalk 1.5's habits (see the module docstring)."""

    def __init__(self, port: int, target: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)  # socket.timeout after READ_TIMEOUT without data
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buffer += chunk

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def run(self, seconds: float) -> TextalkLikeRun:
        """Read until `seconds` have passed, or die on the first error, as the sample does."""
        result = TextalkLikeRun()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                opcode, payload = self._frame()
                if opcode == 0x9:
                    result.pings += 1
                    self.sock.sendall(client_frame(0xA, payload))
                elif opcode == 0x1:
                    text: dict[str, Any] = orjson.loads(payload)["text"]
                    *_, last = text.items()  # mapObject: each type overwrites the previous
                    result.kept.append(last)
                elif opcode == 0x8:
                    raise ConnectionError(f"closed by the server: {payload!r}")
        except Exception as exc:  # die(): any exception ends the client
            result.died = f"{type(exc).__name__}: {exc}"
        finally:
            self.sock.close()
        return result


def a_call(tenants: Tenants) -> list[Event]:
    """One change, as the sample's `connectPeerNumber` branch expects it."""
    peer = f"{tenants.a_name}-101"
    return [
        Subscriber(peer, DeviceState.IN_USE, "600100200", "Jan Nowak"),
        ExtStatus("101", DeviceState.IN_USE),
        QueueMember(
            peer,
            "Kolejka1",
            MemberStatus.IN_USE,
            1,
            dynamic=False,
            paused=False,
            name="Agent",
            location=f"SIP/{peer}",
        ),
    ]


async def textalk_session(
    server: LiveServer, tenants: Tenants, seconds: float, events: list[Event]
) -> TextalkLikeRun:
    """The client runs in a thread (it blocks); the change is published once it listens."""
    client = await asyncio.to_thread(TextalkLikeClient, server.port, a_path(tenants))
    session = asyncio.create_task(asyncio.to_thread(client.run, seconds))
    await publish(server, tenants.a_name, events)
    return await session


async def test_a_textalk_like_client_stays_60_s_on_a_quiet_pbx(tmp_path: Path) -> None:
    """Default settings, no backend traffic: only the keep-alive keeps the client reading."""
    tenants = Tenants()
    settings = make_settings(tmp_path)  # backend "none": the PBX is quiet
    assert settings.ws_ping_interval < READ_TIMEOUT / 1.25 - 1  # sweep lag + a second to spare
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        run = await textalk_session(server, tenants, 60.0, a_call(tenants))
    assert run.died is None
    assert run.pings >= 60 / (2 * READ_TIMEOUT)  # several: it was quiet most of the time
    # One event per message: it kept every type, also the subscriber line with the number.
    assert [kind for kind, _ in run.kept] == ["subscriber", "extstatus", "qmember"]
    assert run.kept[0][1]["connectPeerNumber"] == "600100200"


async def test_with_bundling_the_same_client_loses_all_but_the_last_type(tmp_path: Path) -> None:
    """Why bundling is opt-in: what `Event::mapObject` makes of a bundled change."""
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_bundle_events=True)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        run = await textalk_session(server, tenants, 1.0, a_call(tenants))
    assert run.died is None
    assert [kind for kind, _ in run.kept] == ["qmember"]


# ---------------------------------------------------------- closes name the resume id


async def test_a_client_that_stops_answering_gets_1011_naming_its_resume_id(pinging) -> None:
    server, tenants = pinging
    async with raw_ws(server, a_path(tenants)) as (reader, _writer, head):
        assert head.startswith(b"HTTP/1.1 101")
        [sent] = await publish(server, tenants.a_name, [ExtStatus("101", DeviceState.IDLE)])
        frames = [await read_frame(reader, 2)]
        while frames[-1][0] != 0x8:  # no pongs: pings, then the close
            frames.append(await read_frame(reader, 2))
    opcodes = [opcode for opcode, _ in frames]
    assert opcodes[0] == 0x1 and frames[0][1] == sent.data.encode()
    assert 0x9 in opcodes
    code, reason = struct.unpack("!H", frames[-1][1][:2])[0], frames[-1][1][2:].decode()
    assert code == 1011
    assert reason == f"keep-alive timeout; resume with last_event_id={sent.id}"


async def test_a_quiet_client_is_pinged_and_one_that_answers_stays(pinging) -> None:
    server, tenants = pinging
    async with raw_ws(server, a_path(tenants)) as (reader, writer, _head):
        for _ in range(5):  # well past the pong timeout, answering every ping
            opcode, payload = await read_frame(reader, 2)
            assert opcode == 0x9
            assert payload == b""  # the same two bytes to every connection
            writer.write(client_frame(0xA, payload))
        [sent] = await publish(server, tenants.a_name, [ExtStatus("102", DeviceState.IDLE)])
        opcode, payload = await read_frame(reader, 2)
        while opcode == 0x9:
            writer.write(client_frame(0xA, payload))
            opcode, payload = await read_frame(reader, 2)
        assert (opcode, payload) == (0x1, sent.data.encode())


async def test_a_busy_connection_is_not_pinged(tmp_path: Path) -> None:
    """Messages every 0.1 s keep a connection alive: with a 2 s interval, 4 s of traffic
    bring no ping (an idle connection would have had two)."""
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_ping_interval=2.0)
    async with (
        running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server,
        raw_ws(server, a_path(tenants)) as (reader, _writer, _head),
    ):
        opcodes: list[int] = []

        async def read_all() -> None:
            while True:
                opcode, _ = await read_frame(reader, 10)
                opcodes.append(opcode)

        reading = asyncio.create_task(read_all())
        for n in range(40):
            await publish(server, tenants.a_name, [ExtStatus(str(100 + n), DeviceState.IDLE)])
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)  # the last messages arrive
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    assert opcodes.count(0x1) == 40
    assert 0x9 not in opcodes


async def test_server_shutdown_closes_with_1012_naming_the_resume_id(tmp_path: Path) -> None:
    tenants = Tenants()
    async with running(
        make_settings(tmp_path), prepare=lambda rt: create_tenants(rt, tenants)
    ) as server:
        ws = await ws_connect(server, a_path(tenants))
        [sent] = await publish(server, tenants.a_name, [ExtStatus("101", DeviceState.IDLE)])
        assert (await recv_json(ws))["id"] == sent.id
        stop = asyncio.create_task(server.stop())
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
        await stop
        await ws.close()
        server.server.should_exit = True
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1012
    assert info.value.rcvd.reason == f"server restart; resume with last_event_id={sent.id}"
