"""HTTP request latency by route template, method and status class.

The labels stay bounded whatever clients send: the route is the template the router
matched (`/record/{uniqueid:path}`, never the path a client typed, which could hold a PBX
name or a made-up string per request), `unmatched` when none did (404s, and answers
given before routing such as 429); the method is one of the standard ones or `other`;
the status is its class (`2xx` ... `5xx`). WebSocket connections are not requests here:
they have their own metrics. One histogram observation per request, the same order of
cost as the request's log line.
"""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class RequestMetricsMiddleware:
    """Outermost ASGI middleware: times each HTTP request to its last response byte."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self._histogram = histogram
        self._children: dict[tuple[str, str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an app that raised before answering: uvicorn answers 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        method = scope["method"] if scope["method"] in METHODS else "other"
        key = (route, method, f"{status // 100}xx")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._histogram.labels(*key)
        child.observe(seconds)
