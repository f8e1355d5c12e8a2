"""`/cdr`, `/transcription`, `/record`: what happened on the PBX."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from cloudpbx.api.auth import RuntimeDep, TenantDep
from cloudpbx.api.lean_route import LeanRoute
from cloudpbx.api.responses import (
    CLIENT_ERRORS,
    ErrorBody,
    OrjsonResponse,
    RangeAnswer,
    RecordingFileResponse,
    page_response,
    range_answer,
    range_not_satisfiable,
)
from cloudpbx.api.routes.params import DateStart, DateStop, UniqueId
from cloudpbx.domain.dates import date_range
from cloudpbx.domain.errors import NotFound

log = logging.getLogger(__name__)
# The lists are what integrators poll: their handlers skip FastAPI's per-request
# dependency solving (api/lean_route.py); the other routes here keep FastAPI's.
router = APIRouter(route_class=LeanRoute)

AUDIO_TYPES = {
    "wav": "audio/wav",
    "wav49": "audio/x-wav",
    "gsm": "audio/x-gsm",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
}

_BINARY = {"type": "string", "format": "binary"}
_LOCAL_TIME = "YYYY-MM-DD HH:MM:SS in the PBX's time zone"


# Documentation only: the lists are rendered to JSON by the database (storage/json_rows.py),
# these models describe what that JSON holds.
class CdrRow(BaseModel):
    """One billing record, Asterisk CDR semantics, fields in the document's order."""

    calldate: str = Field(description=f"Call start, {_LOCAL_TIME}")
    clid: str = Field(description='Caller id, `"Name" <number>`')
    src: str
    dst: str
    channel: str
    dstchannel: str
    lastapp: str = Field(description="Last dialplan application: Dial, Queue, SMS, ...")
    duration: int = Field(description="Seconds, including setup")
    billsec: int = Field(description="Seconds after answer (at most duration)")
    disposition: str = Field(description="ANSWERED, NO ANSWER, BUSY or FAILED")
    uniqueid: str = Field(description="Call id `epoch.seq`, or an SMS's responseId")
    cost: str = Field(description='Grosze as a string; "" when not rated')
    zone: str = Field(description='Billing zone; "" when none')


class TranscriptionRow(BaseModel):
    uniqueid: str
    calldate: str = Field(description=f"Call start, {_LOCAL_TIME}")
    src: str
    dst: str


class Transcription(BaseModel):
    uniqueid: str
    content: str
    summary: str


class RecordingRow(BaseModel):
    uniqueid: str
    src: str
    dst: str
    format: str = Field(description="File format, e.g. wav; the download is {uniqueid}.{format}")
    date: str = Field(description=f"Call start, {_LOCAL_TIME}")


def _list_of(rows: Any) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a capped list endpoint (its rows' model and the cap headers)."""
    headers = {
        "X-Total-Count": {"description": "Rows that matched", "schema": {"type": "integer"}},
        "X-Truncated": {
            "description": "`true` when more rows matched than the cap; the oldest are sent",
            "schema": {"type": "string"},
        },
    }
    return {**CLIENT_ERRORS, 200: {"model": rows, "headers": headers}}


# Every GET here also answers HEAD (the same headers, no body), outside the OpenAPI document.
@router.head("/cdr", include_in_schema=False)
@router.get(
    "/cdr", tags=["calls"], responses=_list_of(list[CdrRow]), summary="CDR rows of a date range"
)
async def list_cdr(
    request: Request,
    tenant: TenantDep,
    runtime: RuntimeDep,
    datestart: DateStart = None,
    datestop: DateStop = None,
) -> Response:
    """Billing records, oldest first, at most `cdr_cap` (10,000); `X-Total-Count` always,
    `X-Truncated: true` when more matched. gzip on `Accept-Encoding: gzip`; a strong `ETag`,
    and 304 on a matching `If-None-Match`."""
    period = date_range(datestart, datestop, tenant.zone)
    page = await runtime.calls.cdr_page(tenant, period, runtime.settings.cdr_cap)
    return await page_response(request, page)


@router.head("/transcription", include_in_schema=False)
@router.get(
    "/transcription",
    tags=["calls"],
    responses=_list_of(list[TranscriptionRow]),
    summary="Finished transcriptions",
)
async def list_transcriptions(
    request: Request,
    tenant: TenantDep,
    runtime: RuntimeDep,
    datestart: DateStart = None,
    datestop: DateStop = None,
) -> Response:
    period = date_range(datestart, datestop, tenant.zone)
    cap = runtime.settings.transcription_cap
    page = await runtime.calls.transcription_page(tenant, period, cap)
    return await page_response(request, page)


# `:path` (here and on /record) takes ids with `/` in them (`..%2F..`) to the handler, whose
# check refuses them with a 400; the plain converter let them fall through to a 404 or a
# slash redirect.
@router.head("/transcription/{uniqueid:path}", include_in_schema=False)
@router.get(
    "/transcription/{uniqueid:path}",
    tags=["calls"],
    summary="One transcription",
    responses={**CLIENT_ERRORS, 200: {"model": Transcription}},
)
async def get_transcription(uniqueid: UniqueId, tenant: TenantDep, runtime: RuntimeDep) -> Response:
    found = await runtime.calls.get_transcription(tenant, uniqueid)
    if found is None:
        raise NotFound(f"no transcription for call {uniqueid}", code="unknown_transcription")
    return OrjsonResponse(found)


@router.head("/record", include_in_schema=False)
@router.get(
    "/record",
    tags=["calls"],
    responses=_list_of(list[RecordingRow]),
    summary="Recordings of a date range",
)
async def list_recordings(
    request: Request,
    tenant: TenantDep,
    runtime: RuntimeDep,
    datestart: DateStart = None,
    datestop: DateStop = None,
) -> Response:
    period = date_range(datestart, datestop, tenant.zone)
    cap = runtime.settings.record_cap
    page = await runtime.calls.recording_page(tenant, period, cap)
    return await page_response(request, page)


@router.head("/record/{uniqueid:path}", include_in_schema=False)
@router.get(
    "/record/{uniqueid:path}",
    tags=["calls"],
    summary="Download a recording (supports Range)",
    response_class=Response,  # no media type of its own: audio, or the JSON errors
    responses={
        **CLIENT_ERRORS,
        200: {
            "description": "The file, as an attachment named {uniqueid}.{format}",
            "content": {audio: {"schema": _BINARY} for audio in sorted(set(AUDIO_TYPES.values()))},
        },
        206: {"description": "The requested byte range (`Content-Range` says which)"},
        416: {"model": ErrorBody, "description": "No requested range is inside the file"},
    },
)
async def download_recording(
    uniqueid: UniqueId, request: Request, tenant: TenantDep, runtime: RuntimeDep
) -> Response:
    """The audio file; `Range: bytes=...` gets 206, a range past its end 416 (JSON)."""
    info = await runtime.calls.get_recording(tenant, uniqueid)
    if info is None:
        raise NotFound(f"no recording for call {uniqueid}", code="unknown_recording")
    root = runtime.ingest.recordings_dir(tenant.name)
    path = await anyio.to_thread.run_sync(_recording_path, root, info.path)
    if path is None:
        log.error("recording path %r of %s escapes its folder; refused", info.path, tenant.name)
        raise NotFound(f"no recording for call {uniqueid}", code="unknown_recording")
    stat_result = await anyio.to_thread.run_sync(_regular_file_stat, path)
    if stat_result is None:
        raise NotFound(
            f"the recording of call {uniqueid} is listed but its file is missing",
            code="recording_file_missing",
        )
    answer = range_answer(request.headers.get("range"), stat_result.st_size)
    if answer is RangeAnswer.UNSATISFIABLE:
        return range_not_satisfiable(stat_result.st_size)
    return RecordingFileResponse(
        path,
        stat_result=stat_result,
        media_type=AUDIO_TYPES.get(info.format.lower(), "application/octet-stream"),
        filename=f"{info.uniqueid}.{info.format}",
        ignore_range=answer is RangeAnswer.WHOLE,
    )


def _recording_path(root: Path, stored: str) -> Path | None:
    """The file under `root` that `stored` names, or None if it (or a link) leads outside."""
    root = root.resolve()
    path = (root / stored).resolve()
    return path if path.is_relative_to(root) else None


def _regular_file_stat(path: Path) -> os.stat_result | None:
    """The file's stat, taken once (FileResponse reuses it), or None if no regular file.

    Stat here rather than in FileResponse: a file that vanished must be a 404, and
    FileResponse would raise (a 500) after the route returned.
    """
    try:
        result = path.stat()
    except OSError:
        return None
    return result if stat.S_ISREG(result.st_mode) else None
