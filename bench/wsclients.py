"""A WebSocket load worker: N connections from one process, driven over stdin/stdout.

`python -m bench.wsclients --url WS_URL --conns N --name NAME --out DIR [--first K]
[--client websockets|raw] [--compression]` opens N connections (at most 64 handshakes in
flight; a `{n}` in the URL becomes K, K+1, ... one per connection: one PBX each),
prints `{"event": "ready", "ok": .., "failed": ..}` and then obeys JSON lines:

- `{"cmd": "step", "step": K, "expect": E, "deadline": S}`: count the messages of step K
  (`connectPeerNumber == str(K)`) until every open connection got E of them or S seconds
  passed; latency of each = receive time - `connectPeerName` (when the server was to
  publish it: a late publisher counts as latency, no coordinated omission). Writes
  the latencies (float64, seconds) to DIR/NAME-stepK.bin and prints a summary line.
- `{"cmd": "expect", "step": K, "expect": E}`: the publisher sent only E (it gave up).
- `{"cmd": "close"}`: close every connection (bounded), print `{"event": "closed"}`, exit.

Two clients: `websockets` (default), the library's asyncio client, one reader task per
connection; `raw`, a minimal RFC 6455 client on an asyncio Protocol (no compression, no
tasks, frames parsed in `data_received`), for when the client's own CPU cost matters.
Connections that the server closes are counted by close code.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import struct
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import MAX_CHILD_SECONDS, emit, install_uvloop, raise_fd_limit
from cloudpbx.api.redaction import redact

CONNECT_CONCURRENCY = 64
CONNECT_TIMEOUT = 30.0
CONNECT_DEADLINE = 180.0
CONNECT_PER_CONNECTION = 0.02
"""Seconds added to the connect deadline per connection: 10,000 handshakes on a busy
2-core machine took over 180 s."""


def connect_deadline(conns: int) -> float:
    """How long a worker tries to open `conns` connections before it reports."""
    return CONNECT_DEADLINE + CONNECT_PER_CONNECTION * conns


class Counts:
    """What the connections of this process received in the current step."""

    def __init__(self) -> None:
        self.step_tag = ""
        self.target = 0
        self.received = 0
        self.stale = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.latencies = array("d")
        self.done = asyncio.Event()
        self.close_codes: Counter[str] = Counter()
        self.open_count = 0
        self.disorder = 0
        """Messages whose id was not above the connection's previous one (whole run)."""

    def on_message(self, raw: str | bytes, received_at: float, previous_id: int) -> int:
        """Count one message of a connection whose last id was `previous_id`; returns
        this message's id."""
        message = orjson.loads(raw)
        message_id = int(message["id"])
        if message_id <= previous_id:
            self.disorder += 1
        sub = message["text"]["subscriber"]
        if sub["connectPeerNumber"] != self.step_tag:
            self.stale += 1
            return message_id
        self.latencies.append(received_at - float(sub["connectPeerName"]))
        self.received += 1
        if not self.t_first:
            self.t_first = received_at
        self.t_last = received_at
        if self.received >= self.target:
            self.done.set()
        return message_id

    def on_closed(self, code: int) -> None:
        self.close_codes[str(code)] += 1
        self.open_count -= 1


class LibraryClient:
    """The `websockets` asyncio client with one reader task."""

    def __init__(self, ws: ClientConnection, counts: Counts) -> None:
        self.ws = ws
        self.task = asyncio.create_task(self._read(counts))

    @classmethod
    async def open(cls, url: str, counts: Counts, compression: bool) -> LibraryClient:
        ws = await connect(
            url,
            compression="deflate" if compression else None,
            open_timeout=CONNECT_TIMEOUT,
            ping_interval=None,  # the server pings; the client answers
            close_timeout=5,
            max_queue=64,
        )
        return cls(ws, counts)

    async def _read(self, counts: Counts) -> None:
        now = time.time
        code = 1000
        last_id = 0
        try:
            async for raw in self.ws:
                last_id = counts.on_message(raw, now(), last_id)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
        counts.on_closed(code)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 10)
        self.task.cancel()


class RawClient(asyncio.Protocol):
    """RFC 6455 by hand: handshake, unmasked server frames in, masked pong/close out."""

    def __init__(self, counts: Counts, request: bytes) -> None:
        self.counts = counts
        self.request = request
        self.transport: Any = None
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.fragments: list[bytes] = []
        self.close_code: int | None = None
        self.closing = False
        self.last_id = 0

    @classmethod
    async def open(cls, url: str, counts: Counts, compression: bool) -> RawClient:
        if compression:
            raise ValueError("the raw client does not do permessage-deflate")
        parts = urlsplit(url)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        _, client = await asyncio.wait_for(
            loop.create_connection(
                lambda: cls(counts, request), parts.hostname or "127.0.0.1", parts.port or 80
            ),
            CONNECT_TIMEOUT,
        )
        await asyncio.wait_for(client.upgraded, CONNECT_TIMEOUT)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(self.request)

    def _send(self, opcode: int, payload: bytes) -> None:
        # Mask key 0: XOR leaves the payload as it is (clients must mask; any key is valid).
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status + b" ":
                self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
                self.transport.close()
                return
            self.upgraded.set_result(None)
        received_at = time.time()
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - offset < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset + 2)
                head = 4
            elif length == 127:
                if size - offset < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset + 2)
                head = 10
            if size - offset < head + length:
                break
            payload = bytes(buffer[offset + head : offset + head + length])
            offset += head + length
            opcode = first & 0x0F
            if opcode in (0x1, 0x2, 0x0):
                if not first & 0x80:
                    self.fragments.append(payload)
                    continue
                if self.fragments:
                    payload = b"".join([*self.fragments, payload])
                    self.fragments.clear()
                self.last_id = self.counts.on_message(payload, received_at, self.last_id)
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if not self.closing:
                    self._send(0x8, payload[:2])
                self.transport.close()
        del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed before the upgrade"))
        else:
            self.counts.on_closed(self.close_code or 1006)
        if not self.lost.done():
            self.lost.set_result(None)

    async def close(self) -> None:
        if self.lost.done():
            return
        self.closing = True
        with contextlib.suppress(Exception):
            self._send(0x8, struct.pack("!H", 1000))
            await asyncio.wait_for(asyncio.shield(self.lost), 10)
        self.transport.close()


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts = Counts()
        self.connections: list[LibraryClient | RawClient] = []
        self.deflated = 0
        """Connections on which the server accepted permessage-deflate."""

    async def _open_one(self, sem: asyncio.Semaphore, failures: list[str], number: int) -> None:
        kind = RawClient if self.args.client == "raw" else LibraryClient
        url = self.args.url.replace("{n}", str(number))
        async with sem:
            try:
                client = await kind.open(url, self.counts, self.args.compression)
            except Exception as exc:
                failures.append(redact(f"{type(exc).__name__}: {exc}"))  # may name the URL
                return
        self.connections.append(client)
        self.counts.open_count += 1
        if isinstance(client, LibraryClient) and client.ws.protocol.extensions:
            self.deflated += 1  # permessage-deflate, the only extension offered

    async def open_all(self) -> None:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failures: list[str] = []
        started = time.monotonic()
        first = self.args.first
        tasks = [
            asyncio.create_task(self._open_one(sem, failures, first + index))
            for index in range(self.args.conns)
        ]
        _, pending = await asyncio.wait(tasks, timeout=connect_deadline(self.args.conns))
        for task in pending:
            task.cancel()
        emit(
            {
                "event": "ready",
                "ok": len(self.connections),
                "failed": self.args.conns - len(self.connections),
                "seconds": time.monotonic() - started,
                "error": failures[0] if failures else "",
                "deflated": self.deflated,
            }
        )

    def arm(self, step: int, expect: int) -> None:
        """Start counting step `step` (before the orchestrator starts publishing it)."""
        c = self.counts
        del c.latencies[:]
        c.received = c.stale = 0
        c.t_first = c.t_last = 0.0
        c.done = asyncio.Event()
        c.target = expect * max(1, c.open_count)
        c.step_tag = str(step)

    def expect(self, step: int, expect: int) -> None:
        """The publisher sent fewer events than planned (it gave up when too far behind)."""
        c = self.counts
        if c.step_tag == str(step):
            c.target = expect * max(1, c.open_count)
            if c.received >= c.target:
                c.done.set()

    async def step(self, step: int, deadline: float) -> dict[str, Any]:
        c = self.counts
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(c.done.wait(), deadline)
        path = Path(self.args.out) / f"{self.args.name}-step{step}.bin"
        path.write_bytes(c.latencies.tobytes())
        c.step_tag = ""
        return {
            "event": "step",
            "step": step,
            "received": c.received,
            "expected": c.target,
            "stale": c.stale,
            "t_first": c.t_first,
            "t_last": c.t_last,
            "path": str(path),
            "open": c.open_count,
            "disorder": c.disorder,
            "close_codes": dict(c.close_codes),
        }

    async def close_all(self) -> None:
        if self.connections:
            await asyncio.wait(
                [asyncio.create_task(conn.close()) for conn in self.connections], timeout=30
            )
        emit({"event": "closed", "close_codes": dict(self.counts.close_codes)})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--client", choices=("websockets", "raw"), default="websockets")
    parser.add_argument("--compression", action="store_true")
    args = parser.parse_args()
    raise_fd_limit(args.conns + 256)
    worker = Worker(args)
    await worker.open_all()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    steps: set[asyncio.Task[None]] = set()

    async def run_step(step: int, deadline: float) -> None:
        emit(await worker.step(step, deadline))

    started = time.monotonic()
    while time.monotonic() - started < MAX_CHILD_SECONDS:
        try:
            line = await asyncio.wait_for(stdin.readline(), 60)
        except TimeoutError:
            continue
        if not line:
            break
        command = orjson.loads(line)
        if command["cmd"] == "step":
            worker.arm(command["step"], command["expect"])
            emit({"event": "armed", "step": command["step"]})
            task = asyncio.create_task(run_step(command["step"], command["deadline"]))
            steps.add(task)
            task.add_done_callback(steps.discard)
        elif command["cmd"] == "expect":
            worker.expect(command["step"], command["expect"])
        elif command["cmd"] == "close":
            break
    for task in list(steps):
        task.cancel()
    await worker.close_all()


if __name__ == "__main__":
    install_uvloop()
    asyncio.run(main())
