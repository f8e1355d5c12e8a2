"""Response helpers: orjson bodies, pre-rendered JSON arrays, the contract's errors,
recording downloads with HTTP ranges."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

import anyio.to_thread
import orjson
from pydantic import BaseModel, Field
from starlette.requests import Request
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


# -- lists: validators, compression, HEAD -------------------------------------------------

GZIP_LEVEL = 1
"""Level 1: a 3 MB /cdr day shrinks ~6x in ~17 ms; higher levels gain a few % for 3-4x
the time, and a page of today that keeps changing is compressed again on each change."""
COMPRESS_IN_THREAD = 64 * 1024
"""Bodies from this size are compressed off the event loop (zlib releases the GIL)."""
_VARY = (b"vary", b"Accept-Encoding")
_JSON = (b"content-type", b"application/json")


class PreparedResponse(Response):
    """Bytes and raw headers known in full: none of Response's header building per request."""

    def __init__(self, status_code: int, body: bytes, raw_headers: list[tuple[bytes, bytes]]):
        self.status_code = status_code
        self.body = body
        self.raw_headers = raw_headers
        self.background = None


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether `Accept-Encoding` lets us send gzip (RFC 9110 §12.5.3: q=0 refuses)."""
    if not accept_encoding:
        return False
    wildcard = False
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding == "*":
            wildcard = weight > 0
        else:
            return weight > 0
    return wildcard


def _etag_matches(if_none_match: str, tags: tuple[bytes, ...]) -> bool:
    """RFC 9110 §13.1.2: weak comparison; `*` matches any current representation."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.encode("latin-1", "replace") in tags:
            return True
    return False


def _etag(page: JsonPage) -> bytes:
    """The page's strong ETag (quoted), computed once per page object."""
    tag = page.derived.get("etag")
    if tag is None:
        name = page.tag or hashlib.blake2b(page.body, digest_size=12).hexdigest()
        tag = page.derived["etag"] = f'"{name}"'.encode("ascii")
    return tag


async def _gzipped(page: JsonPage) -> bytes:
    """The page's gzip body, compressed once per page object (cached pages: once)."""
    body = page.derived.get("gzip")
    if body is None:
        if len(page.body) >= COMPRESS_IN_THREAD:
            body = await anyio.to_thread.run_sync(_gzip, page.body)
        else:
            body = _gzip(page.body)
        page.derived["gzip"] = body
    return body


def _gzip(body: bytes) -> bytes:
    # mtime=0: the same page always compresses to the same bytes.
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


async def page_response(request: Request, page: JsonPage) -> Response:
    """A JSON array rendered by the database, with the cap headers (docs/decisions.md),
    a strong ETag (304 on a matching If-None-Match) and gzip when the client asks.

    The gzip representation has its own ETag (`"TAG-gzip"`, as a strong validator must
    differ between encodings); If-None-Match accepts either, since both name one page.
    """
    plain_tag = _etag(page)
    gzip_tag = plain_tag[:-1] + b'-gzip"'
    compress = accepts_gzip(request.headers.get("accept-encoding"))
    headers = [
        (b"etag", gzip_tag if compress else plain_tag),
        _VARY,
        (b"x-total-count", str(page.total).encode("ascii")),
    ]
    if page.truncated:
        headers.append((b"x-truncated", b"true"))
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, (plain_tag, gzip_tag)):
        return PreparedResponse(304, b"", headers)
    body = page.body
    if compress:
        body = await _gzipped(page)
        headers.append((b"content-encoding", b"gzip"))
    headers += [_JSON, (b"content-length", str(len(body)).encode("ascii"))]
    return PreparedResponse(200, body, headers)


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
