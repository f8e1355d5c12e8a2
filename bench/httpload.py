"""An HTTP/1.1 keep-alive load generator with next to no client-side cost.

`python -m bench.httpload --port P --path PATH [--header H]... --conns C --duration S
--max-requests M --expect-bytes B` runs C connections, each sending GET PATH back to back
(next request only after the whole response body arrived), for S seconds or M requests in
all, whichever comes first; prints one JSON line with the count, errors, elapsed time and
every latency (seconds). A response counts as an error unless it is a 200 whose body has
exactly B bytes (B = 0: any length).

A raw asyncio client rather than httpx: the bodies here are ~3 MB, and httpx's parsing
would make the client, not the server, the bottleneck of the precomputed-bytes baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.common import HOST, emit, install_uvloop


class _Exchange(asyncio.Protocol):
    """One keep-alive connection: parses the status line and Content-Length, then only
    counts body bytes (no buffering, no copying) until the response is complete."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.head = bytearray()
        self.remaining = -1
        self.status = 0
        self.length = 0
        self.done: asyncio.Future[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def request(self, data: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self.head.clear()
        self.remaining = -1
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.done

    def data_received(self, data: bytes) -> None:
        if self.remaining < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.head[:end])
            body = len(self.head) - end - 4
            self.status = int(head.split(b" ", 2)[1])
            self.length = -1
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.length = int(value.strip())
            if self.length < 0:
                self._finish(RuntimeError("response without Content-Length"))
                return
            self.remaining = self.length - body
        else:
            self.remaining -= len(data)
        if self.remaining <= 0:
            self._finish(None)

    def _finish(self, error: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(ConnectionError("connection closed by the server"))
        if not self.closed.done():
            self.closed.set_result(None)


async def one_connection(
    args: argparse.Namespace, request: bytes, end: float, state: dict[str, int], out: list[float]
) -> None:
    loop = asyncio.get_running_loop()
    transport, exchange = await asyncio.wait_for(
        loop.create_connection(_Exchange, HOST, args.port), 10
    )
    try:
        while time.monotonic() < end and state["issued"] < args.max_requests:
            state["issued"] += 1
            started = time.perf_counter()
            await asyncio.wait_for(exchange.request(request), 60)
            out.append(time.perf_counter() - started)
            if exchange.status != 200 or (
                args.expect_bytes and exchange.length != args.expect_bytes
            ):
                state["errors"] += 1
    finally:
        transport.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--expect-bytes", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    headers = "".join(f"{h}\r\n" for h in args.header)
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {HOST}:{args.port}\r\n{headers}"
        "Accept: application/json\r\n\r\n"
    ).encode()
    warm_state = {"issued": 0, "errors": 0}
    warm_args = argparse.Namespace(**{**vars(args), "max_requests": args.warmup})
    await one_connection(warm_args, request, time.monotonic() + 30, warm_state, [])
    state = {"issued": 0, "errors": 0}
    latencies: list[float] = []
    started = time.monotonic()
    end = started + args.duration
    await asyncio.gather(
        *(one_connection(args, request, end, state, latencies) for _ in range(args.conns))
    )
    elapsed = time.monotonic() - started
    emit(
        {
            "event": "done",
            "requests": len(latencies),
            "errors": state["errors"] + warm_state["errors"],
            "seconds": elapsed,
            "latencies": latencies,
        }
    )


if __name__ == "__main__":
    install_uvloop()
    asyncio.run(main())
