"""Redis Streams or NATS JetStream for the cross-process event stream: the evidence.

    .venv/bin/python -m bench.engines

Starts private servers (Debian's `redis-server` and `nats-server`, on free ports with
their own folders), so the shared ones are never restarted, and measures for each:

- latency publish -> delivery to a live reader in another connection, at a steady rate
  (p50/p99, the reader being what each process's channel reader is);
- durability: messages acknowledged, then the server is killed with SIGKILL at once and
  restarted; how many of the acknowledged messages are still there.

Redis runs twice: as the machine's instance is configured (no persistence) and with
`appendonly yes`, `appendfsync always` (its most durable setting). The numbers are in
docs/decisions.md ("Event engine").
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import redis.asyncio as aioredis
from nats.js.api import StreamConfig

RATE = 500.0
COUNT = 2_000
DURABLE_COUNT = 1_000
PAYLOAD = b"x" * 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_port(port: int, patience: float = 10.0) -> None:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return
    raise TimeoutError(f"nothing listens on {port}")


class Proc:
    """A server process we started and may kill -9 and start again, same arguments."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def start(self) -> None:
        self.launch()
        await wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def nats_server(folder: Path) -> Proc:
    port = free_port()
    argv = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(folder)]
    return Proc(argv, port)


def redis_server(folder: Path, durable: bool) -> Proc:
    port = free_port()
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else []
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    return Proc([*argv, "--dir", str(folder), *(persistence or ["--appendonly", "no"])], port)


def summary(latencies: list[float]) -> str:
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return f"p50 {statistics.median(latencies) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


async def paced(send: Callable[[bytes], Awaitable[object]]) -> None:
    start = time.perf_counter()
    for index in range(COUNT):
        due = start + index / RATE
        if (pause := due - time.perf_counter()) > 0:
            await asyncio.sleep(pause)
        await send(b"%.9f|" % time.perf_counter() + PAYLOAD)


async def jetstream_latency(port: int) -> str:
    url = f"nats://127.0.0.1:{port}"
    pub, sub = await nats.connect(url), await nats.connect(url)
    js = pub.jetstream()
    await js.add_stream(StreamConfig(name="B", subjects=["b.*"], max_msgs_per_subject=1000))
    latencies: list[float] = []
    done = asyncio.Event()

    async def on_message(msg: nats.aio.msg.Msg) -> None:
        latencies.append(time.perf_counter() - float(msg.data.split(b"|", 1)[0]))
        if len(latencies) == COUNT:
            done.set()

    await sub.jetstream().subscribe("b.1", cb=on_message, ordered_consumer=True)
    await paced(lambda data: js.publish("b.1", data))
    await asyncio.wait_for(done.wait(), 10)
    await pub.close()
    await sub.close()
    return summary(latencies)


async def redis_latency(port: int) -> str:
    pub = aioredis.Redis(port=port)
    sub = aioredis.Redis(port=port)
    latencies: list[float] = []

    async def read() -> None:
        last = "$"
        while len(latencies) < COUNT:
            for _, entries in await sub.xread({"b:1": last}, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    latencies.append(time.perf_counter() - float(fields[b"d"].split(b"|")[0]))

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.1)
    await paced(lambda data: pub.xadd("b:1", {"d": data}, maxlen=1000, approximate=True))
    await asyncio.wait_for(reader, 10)
    await pub.aclose()
    await sub.aclose()
    return summary(latencies)


async def jetstream_durability(server: Proc) -> str:
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}")
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="D", subjects=["d.*"]))
    acks = await asyncio.gather(*(js.publish("d.1", PAYLOAD) for _ in range(DURABLE_COUNT)))
    server.kill()
    await nc.close()
    await server.start()
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}")
    kept = (await nc.jetstream().stream_info("D")).state.messages
    await nc.close()
    return f"{kept} of {len(acks)} acknowledged kept"


async def redis_durability(server: Proc) -> str:
    client = aioredis.Redis(port=server.port)
    for _ in range(DURABLE_COUNT):
        await client.xadd("d:1", {"d": PAYLOAD})
    server.kill()
    await client.aclose()
    await server.start()
    client = aioredis.Redis(port=server.port)
    kept = await client.xlen("d:1")
    await client.aclose()
    return f"{kept} of {DURABLE_COUNT} acknowledged kept"


async def main() -> None:
    print(
        f"{COUNT} messages of {len(PAYLOAD)} bytes at {RATE:.0f}/s; kill -9 after "
        f"{DURABLE_COUNT} acknowledged"
    )
    folder = Path(tempfile.mkdtemp(prefix="cloudpbx-engines-"))
    try:
        for name, make in (
            ("NATS JetStream (file storage)", lambda d: nats_server(d)),
            ("Redis Streams (no persistence)", lambda d: redis_server(d, False)),
            ("Redis Streams (AOF, fsync always)", lambda d: redis_server(d, True)),
        ):
            data = folder / name.split()[0].lower() / str(len(os.listdir(folder)))
            data.mkdir(parents=True)
            server = make(data)
            await server.start()
            try:
                is_nats = name.startswith("NATS")
                latency = await (jetstream_latency if is_nats else redis_latency)(server.port)
                durable = await (jetstream_durability if is_nats else redis_durability)(server)
            finally:
                server.kill()
            print(f"{name}: {latency}; {durable}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
