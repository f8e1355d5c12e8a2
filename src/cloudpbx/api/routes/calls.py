"""`/cdr`, `/transcription`, `/record`: what happened on the PBX."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from cloudpbx.api.auth import RuntimeDep, TenantDep
from cloudpbx.api.responses import OrjsonResponse, page_response
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

_LIST = {200: {"content": {"application/json": {}}}}


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


@router.get("/transcription/{uniqueid}", tags=["calls"], summary="One transcription")
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
    "/record/{uniqueid}",
    tags=["calls"],
    summary="Download a recording (supports Range)",
    responses={200: {"content": {"audio/wav": {}}}, 206: {"description": "Partial content"}},
)
async def download_recording(uniqueid: str, tenant: TenantDep, runtime: RuntimeDep) -> Response:
    info = await runtime.calls.get_recording(tenant, check_uniqueid(uniqueid))
    if info is None:
        raise NotFound(f"no recording for call {uniqueid}", code="unknown_recording")
    root = runtime.ingest.recordings_dir(tenant.name).resolve()
    path = (root / info.path).resolve()
    if not path.is_relative_to(root):
        log.error("recording path %r of %s escapes its folder; refused", info.path, tenant.name)
        raise NotFound(f"no recording for call {uniqueid}", code="unknown_recording")
    if not Path(path).is_file():
        raise NotFound(
            f"the recording of call {uniqueid} is listed but its file is missing",
            code="recording_file_missing",
        )
    return FileResponse(
        path,
        media_type=AUDIO_TYPES.get(info.format.lower(), "application/octet-stream"),
        filename=f"{info.uniqueid}.{info.format}",
    )
