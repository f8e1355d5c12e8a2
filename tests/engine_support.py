"""The event engine for tests: the shared NATS JetStream (started by scripts/test through
scripts/nats, exported as CLOUDPBX_TEST_NATS), private nats-servers for tests that kill
or stall the engine, a stream of its own per test, and WebSocket readers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import orjson
from nats.js.errors import NotFoundError
from websockets.asyncio.client import ClientConnection

NATS_URL = os.environ.get("CLOUDPBX_TEST_NATS", "nats://127.0.0.1:4222")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stream_name() -> str:
    return f"CPBXTEST_{secrets.token_hex(4)}"


async def delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url, max_reconnect_attempts=0)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def own_stream(url: str = NATS_URL) -> AsyncIterator[str]:
    """A stream name for one test, deleted afterwards (the shared server stays clean)."""
    name = stream_name()
    try:
        yield name
    finally:
        await delete_stream(url, name)


class PrivateNats:
    """A nats-server of the test's own (free port, own folder): killed, stalled, restarted."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def launch(self) -> None:
        argv = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        argv += ["-sd", str(self.folder)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def start(self) -> None:
        self.launch()
        for _ in range(200):
            with contextlib.suppress(Exception):
                nc = await nats.connect(self.url, max_reconnect_attempts=0, connect_timeout=1)
                await nc.jetstream().account_info()
                await nc.close()
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the private nats-server did not come up")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def private_nats(folder: Path) -> AsyncIterator[PrivateNats]:
    server = PrivateNats(folder)
    await server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.resume()
        server.kill()


async def read_until(ws: ClientConnection, done: object, seen: dict[int, str]) -> None:
    """Collect messages by id until `done()` is true (bounded by the caller's timeout)."""
    assert callable(done)
    while not done():
        raw = await ws.recv()
        assert isinstance(raw, str)
        message_id = orjson.loads(raw)["id"]
        assert message_id not in seen, f"id {message_id} delivered twice"
        assert not seen or message_id > next(reversed(seen)), f"id {message_id} out of order"
        seen[message_id] = raw


class OutagePipe:
    """A TCP relay to the engine for one process: `cut` closes its connections and
    refuses new ones (a network outage of that process alone) until `restore`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.down:
                raise ConnectionRefusedError("the pipe is cut")
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._relay(reader, up_writer), self._relay(up_reader, writer))
        finally:
            self.writers -= {writer, up_writer}

    def cut(self) -> None:
        self.down = True
        for writer in list(self.writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.down = False


@contextlib.asynccontextmanager
async def outage_pipe(target_port: int) -> AsyncIterator[OutagePipe]:
    pipe = OutagePipe(target_port)
    pipe.server = await asyncio.start_server(pipe._accept, "127.0.0.1", 0)
    try:
        yield pipe
    finally:
        pipe.cut()
        pipe.server.close()
