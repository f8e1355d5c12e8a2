"""Back-off for failed authentications, per client address (429 + `Retry-After`).

Each address has a bucket of `failures` tokens that refills at `failures / window` tokens
a second; every 401 it is answered takes one. An address with an empty bucket gets 429
with `Retry-After` on every request, REST or WebSocket upgrade, before the app (and the
database) sees it, until a token is back. A guessing client is thus held to about
`failures` guesses per `window`, while a client that mistyped its key a few times is not
affected. Cost: one dict lookup per request; memory: at most `max_addresses` entries,
the least recently failed dropped first.

The address is the ASGI `client`, i.e. the TCP peer, or the `X-Forwarded-For` address
when uvicorn was told to trust the peer as a proxy (`trusted_proxies`).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudpbx.api.responses import json_error


@dataclass
class _Bucket:
    tokens: float
    updated: float


class AuthThrottle:
    """Token buckets of failed authentications by address."""

    def __init__(
        self,
        failures: int,
        window: float,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(failures)
        self.rate = failures / window
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may now."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return 0
        tokens = self._refill(bucket)
        if tokens >= 1:
            return 0
        return max(1, math.ceil((1 - tokens) / self.rate))

    def failed(self, address: str) -> None:
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = _Bucket(self.capacity, self._clock())
            while len(self._buckets) >= self.max_addresses:
                self._buckets.popitem(last=False)
        bucket.tokens = self._refill(bucket) - 1
        self._buckets[address] = bucket  # most recent last

    def _refill(self, bucket: _Bucket) -> float:
        now = self._clock()
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket.tokens


class AuthThrottleMiddleware:
    """Refuses addresses out of tokens; counts every 401 (REST or WebSocket denial)."""

    def __init__(self, app: ASGIApp, throttle: AuthThrottle) -> None:
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        wait = self.throttle.retry_after(address)
        if wait:
            await _too_many(scope, send, wait)
            return

        async def watch(message: Message) -> None:
            if (
                message["type"] in ("http.response.start", "websocket.http.response.start")
                and message["status"] == 401
            ):
                self.throttle.failed(address)
            await send(message)

        await self.app(scope, receive, watch)


async def _too_many(scope: Scope, send: Send, wait: int) -> None:
    response = json_error(
        429,
        f"too many failed authentications from this address; retry in {wait} s",
        "too_many_failures",
        headers={"Retry-After": str(wait)},
    )
    if scope["type"] == "http":
        await response(scope, _no_body, send)
        return
    await send(
        {
            "type": "websocket.http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "websocket.http.response.body", "body": response.body})


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
