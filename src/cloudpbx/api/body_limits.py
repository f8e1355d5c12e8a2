"""Request body limits per endpoint: 413 with a JSON error naming the limit.

Only `/sendSMS` and the SMSAPI callbacks take a body (a small form); every other endpoint
takes none, so its limit is 0 (an empty body, `Content-Length: 0`, is fine). A declared
`Content-Length` over the limit is refused before the app runs; a chunked body is counted
as the endpoint reads it. The 413 closes the connection, since the rest of the body was
not read.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudpbx.adapters.smsapi import CALLBACK_PREFIX
from cloudpbx.api.responses import json_error

_CLOSE = {"Connection": "close"}


def body_limit(path: str, form_limit: int) -> int:
    """The most body bytes `path` accepts."""
    if path == "/sendSMS" or path.startswith(CALLBACK_PREFIX + "/"):
        return form_limit
    return 0


def _message(limit: int) -> str:
    if limit == 0:
        return "this endpoint takes no request body"
    return f"request body over the limit of {limit} bytes"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, form_limit: int) -> None:
        self.app = app
        self.form_limit = form_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"], self.form_limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = json_error(413, _message(limit), "too_large", headers=_CLOSE)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # An HTTPException passes FastAPI's body parsing as it is, to errors.py.
                raise HTTPException(413, _message(limit), headers=_CLOSE)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
