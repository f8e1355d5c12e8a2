"""Response helpers: orjson bodies, pre-rendered JSON arrays, the contract's errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from cloudpbx.storage.calls import JsonPage


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_error(
    status: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> Response:
    return OrjsonResponse({"error": message, "code": code}, status_code=status, headers=headers)


def page_response(page: JsonPage) -> Response:
    """A JSON array rendered by the database, with the cap headers (docs/decisions.md)."""
    headers = {"X-Total-Count": str(page.total)}
    if page.truncated:
        headers["X-Truncated"] = "true"
    return Response(page.body, media_type="application/json", headers=headers)
