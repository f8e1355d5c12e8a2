"""The operator panel: a static browser app at `/panel`, built only on the public API.

The server only hands out files; the page itself talks to the REST endpoints and the
WebSocket with the key the operator enters (docs/panel.md). Everything is served from
the package, so the panel works offline, and every answer carries a strict
Content-Security-Policy: the page has no inline script or style, so it needs nothing
looser than `'self'` (plus `ws:`/`wss:` for the event stream and `blob:` for recordings,
which are fetched with the key and played from memory).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).with_name("static")

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; media-src 'self' blob:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Assets are small and change with the package; revalidation keeps an upgrade visible.
    "Cache-Control": "no-cache",
}


class _WithHeaders:
    """Adds SECURITY_HEADERS to every answer of the wrapped app (unless already set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _to_index(_request: Request) -> RedirectResponse:
    return RedirectResponse("/panel/", status_code=308)


def panel_routes() -> list[Route | Mount]:
    """`/panel` → `/panel/` (index.html) and the page's assets under it."""
    files = _WithHeaders(StaticFiles(directory=STATIC, html=True))
    return [Route("/panel", _to_index, methods=["GET", "HEAD"]), Mount("/panel", app=files)]
