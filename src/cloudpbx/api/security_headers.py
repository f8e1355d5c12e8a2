"""Response headers every answer gets unless its endpoint set its own.

- `X-Content-Type-Options: nosniff`: a browser takes each body as the type it is sent as.
- `Cache-Control: no-store`: call records, recordings and transcriptions are personal
  data; no shared or browser cache keeps them. The bundled /docs assets are exempt.
- `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`: nothing an
  answer contains runs or loads anything, and no page frames it. /docs sends its own
  policy, which allows its own assets and its one inline script (by hash).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'"
ASSETS_PREFIX = "/docs/assets/"


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith(ASSETS_PREFIX)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
                if not cacheable:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)
