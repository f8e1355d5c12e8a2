"""`/cdr`, `/transcription`, `/record`: what happened on the PBX."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from cloudpbx.api.auth import RuntimeDep, TenantDep
from cloudpbx.api.responses import (
    OrjsonResponse,
    RangeAnswer,
    RecordingFileResponse,
    page_response,
    range_answer,
    range_not_satisfiable,
)
from cloudpbx.api.routes.params import DateStart, DateStop, check_uniqueid
from cloudpbx.domain.dates import date_range
from cloudpbx.domain.errors import NotFound

log = logging.getLogger(__name__)
router = APIRouter()

AUDIO_TYPES = {
    "wav": "audio/wav",
    "wav49": "audio/x-wav",
    "gsm": "audio/x-gsm",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
}

_LIST: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {}}}}


@router.get("/cdr", tags=["calls"], responses=_LIST, summary="CDR rows of a date range")
async def list_cdr(
    tenant: TenantDep, runtime: RuntimeDep, datestart: DateStart = None, datestop: DateStop = None
) -> Response:
    """Billing records, oldest first, at most `cdr_cap` (10,000); `X-Total-Count` always,
    `X-Truncated: true` when more matched."""
    period = date_range(datestart, datestop, tenant.zone)
    return page_response(await runtime.calls.cdr_page(tenant, period, runtime.settings.cdr_cap))


@router.get("/transcription", tags=["calls"], responses=_LIST, summary="Finished transcriptions")
async def list_transcriptions(
    tenant: TenantDep, runtime: RuntimeDep, datestart: DateStart = None, datestop: DateStop = None
) -> Response:
    period = date_range(datestart, datestop, tenant.zone)
    cap = runtime.settings.transcription_cap
    return page_response(await runtime.calls.transcription_page(tenant, period, cap))


# `:path` (here and on /record) takes ids with `/` in them (`..%2F..`) to the handler, whose
# check refuses them with a 400; the plain converter let them fall through to a 404 or a
# slash redirect.
@router.get("/transcription/{uniqueid:path}", tags=["calls"], summary="One transcription")
async def get_transcription(uniqueid: str, tenant: TenantDep, runtime: RuntimeDep) -> Response:
    found = await runtime.calls.get_transcription(tenant, check_uniqueid(uniqueid))
    if found is None:
        raise NotFound(f"no transcription for call {uniqueid}", code="unknown_transcription")
    return OrjsonResponse(found)


@router.get("/record", tags=["calls"], responses=_LIST, summary="Recordings of a date range")
async def list_recordings(
    tenant: TenantDep, runtime: RuntimeDep, datestart: DateStart = None, datestop: DateStop = None
) -> Response:
    period = date_range(datestart, datestop, tenant.zone)
    cap = runtime.settings.record_cap
    return page_response(await runtime.calls.recording_page(tenant, period, cap))


@router.get(
    "/record/{uniqueid:path}",
    tags=["calls"],
    summary="Download a recording (supports Range)",
    responses={
        200: {"content": {"audio/wav": {}}},
        206: {"description": "Partial content"},
        416: {"description": "Range not satisfiable"},
    },
)
async def download_recording(
    uniqueid: str, request: Request, tenant: TenantDep, runtime: RuntimeDep
) -> Response:
    """The audio file; `Range: bytes=...` gets 206, a range past its end 416 (JSON)."""
    info = await runtime.calls.get_recording(tenant, check_uniqueid(uniqueid))
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
