"""Response helpers: orjson bodies, pre-rendered JSON arrays, the contract's errors,
recording downloads with HTTP ranges."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

import orjson
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from cloudpbx.storage.json_rows import JsonPage


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ErrorBody(BaseModel):
    """The shape of every error the document leaves undocumented (CONTRACT.md, decision)."""

    error: str = Field(description="What is wrong, for a human")
    code: str = Field(description="A stable slug for programs, e.g. invalid_date")


# In every route's `responses`: documents the JSON errors, and (being a "4XX" entry) keeps
# FastAPI from advertising a 422 validation body that this API never sends.
CLIENT_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorBody,
        "description": "A client mistake: missing or revoked key (401), bad parameter (400), "
        "unknown id (404), ...",
    }
}


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


# -- recording downloads -------------------------------------------------------------------

_BYTE_RANGE = re.compile(r"([0-9]*)-([0-9]*)")


class RangeAnswer(Enum):
    """What a download does with the request's `Range` header (RFC 9110 §14)."""

    WHOLE = "whole"  # no Range, or one we may ignore: 200 with the whole file
    PARTIAL = "partial"  # every range satisfiable: 206 (Starlette slices the file)
    UNSATISFIABLE = "unsatisfiable"  # a valid bytes range-set, none satisfiable: 416


def _byte_ranges(header: str) -> list[tuple[int | None, int | None]] | None:
    """The (first, last) pairs of a `bytes=` range-set, or None when it is not a valid one."""
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int | None, int | None]] = []
    for part in spec.split(","):
        match = _BYTE_RANGE.fullmatch(part.strip())
        if match is None or not any(match.groups()):
            return None
        first = int(match[1]) if match[1] else None
        last = int(match[2]) if match[2] else None
        if first is not None and last is not None and last < first:
            return None
        ranges.append((first, last))
    return ranges


def _satisfiable(first: int | None, last: int | None, size: int) -> bool:
    if first is None:  # a suffix range: the last `last` bytes
        return bool(last) and size > 0
    return first < size


def range_answer(header: str | None, size: int) -> RangeAnswer:
    """Decide before any byte is sent, so that refusals are the contract's JSON errors.

    A Range that is not a valid `bytes=` range-set (another unit, bad syntax) is ignored,
    as RFC 9110 §14.2 allows, rather than refused with Starlette's plain-text 400; so is
    one that mixes satisfiable and unsatisfiable ranges.
    """
    ranges = _byte_ranges(header) if header is not None else None
    if not ranges:
        return RangeAnswer.WHOLE
    fits = [_satisfiable(first, last, size) for first, last in ranges]
    if all(fits):
        return RangeAnswer.PARTIAL
    return RangeAnswer.WHOLE if any(fits) else RangeAnswer.UNSATISFIABLE


def range_not_satisfiable(size: int) -> Response:
    return json_error(
        416,
        f"the requested range is outside the recording ({size} bytes)",
        "range_not_satisfiable",
        headers={"Content-Range": f"bytes */{size}"},
    )


class RecordingFileResponse(FileResponse):
    """A FileResponse that can be told to send the whole file despite a `Range` header."""

    def __init__(self, *args: Any, ignore_range: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ignore_range = ignore_range

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ignore_range:
            headers = [(name, value) for name, value in scope["headers"] if name != b"range"]
            scope = {**scope, "headers": headers}
        await super().__call__(scope, receive, send)
