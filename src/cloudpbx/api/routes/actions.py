"""`/dial` and `/sendSMS`: what a client asks the PBX to do."""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Form
from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse, Response

from cloudpbx.api.auth import RuntimeDep, TenantDep
from cloudpbx.api.responses import CLIENT_ERRORS, ErrorBody, OrjsonResponse
from cloudpbx.domain.errors import BadRequest
from cloudpbx.domain.sms import MAX_BODY, is_test_flag, normalize_recipient

log = logging.getLogger(__name__)
router = APIRouter()

# ASCII digits only: `\d` would also match other scripts' digits, which are no extension.
_EXTENSION = re.compile(r"[0-9]{1,10}")
_DIALABLE = re.compile(r"\+?[0-9*#]{1,32}")


class SmsResponse(BaseModel):
    """The document's RESPONSE object (documentation only; SendOutcome.body() builds it)."""

    responseId: str = Field(description="19 digits; also the uniqueid of the SMS's CDR row")
    responseStatus: str = Field(description="QUEUE on success, FAILED when refused")
    responseErrorMessage: str | None = Field(description="null unless the gateway failed")


ACTION_ERROR = "Action Error"
PARAMETER_MISSING = "Parameter is missing"


@router.get(
    "/dial",
    tags=["actions"],
    summary="Call cpa, then connect it to cpb",
    # A class without a media type: the answers below are text, its errors JSON.
    response_class=Response,
    responses={
        **CLIENT_ERRORS,
        200: {"content": {"text/plain": {"example": "OK"}}},
        500: {"content": {"text/plain": {"example": ACTION_ERROR}}},
    },
)
async def dial(
    tenant: TenantDep, runtime: RuntimeDep, cpa: str | None = None, cpb: str | None = None
) -> Response:
    """`OK` once the PBX accepted the call, `Action Error` (500) when it did not.

    Not accepted also covers a cpa the backend already knows cannot ring (Asterisk
    reports its device unavailable: not registered or unreachable), rather than an `OK`
    that fails a millisecond later (docs/asterisk.md, "/dial").
    The `X-Originate-Id` header names the attempt, for matching the PBX's logs.
    """
    for name, value in (("cpa", cpa), ("cpb", cpb)):
        if value is None or value == "":
            raise BadRequest(f"{name} is required", code="missing_parameter")
    assert cpa is not None and cpb is not None
    if not _EXTENSION.fullmatch(cpa):
        raise BadRequest(
            f"cpa must be an extension number (digits), got {cpa!r}", code="invalid_cpa"
        )
    if not _DIALABLE.fullmatch(cpb):
        raise BadRequest(
            f"cpb must be a dialable number (digits, *, #, leading +), got {cpb!r}",
            code="invalid_cpb",
        )
    backend = runtime.backend_for(tenant)
    if backend is None:
        log.warning("dial on %s refused: no PBX backend serves it", tenant.name)
        return PlainTextResponse(ACTION_ERROR, status_code=500)
    if not backend.is_extension(tenant.name, cpa):
        log.info("dial on %s refused: %s is not an extension", tenant.name, cpa)
        return PlainTextResponse(ACTION_ERROR, status_code=500)
    result = await backend.originate(tenant.name, cpa, cpb)
    headers = {"X-Originate-Id": result.reference} if result.reference else None
    if not result.accepted:
        log.info("dial %s→%s on %s refused by PBX: %s", cpa, cpb, tenant.name, result.message)
        return PlainTextResponse(ACTION_ERROR, status_code=500, headers=headers)
    return PlainTextResponse("OK", headers=headers)


@router.post(
    "/sendSMS",
    tags=["actions"],
    summary="Send an SMS through the PBX's gateway",
    responses={
        **CLIENT_ERRORS,
        200: {"model": SmsResponse},
        400: {
            "description": "`to` or `body` missing or invalid",
            "content": {"text/plain": {"example": PARAMETER_MISSING}},
        },
        403: {"model": ErrorBody, "description": "The PBX has no SMS gateway"},
        500: {"model": SmsResponse, "description": "Gateway failure: responseErrorMessage"},
    },
)
async def send_sms(
    tenant: TenantDep,
    runtime: RuntimeDep,
    to: Annotated[str | None, Form()] = None,
    body: Annotated[str | None, Form()] = None,
    test: Annotated[str | None, Form()] = None,
) -> Response:
    runtime.sms.gateway_for(tenant)
    recipient = normalize_recipient(to) if to else None
    if recipient is None or not body or len(body) > MAX_BODY:
        return PlainTextResponse(PARAMETER_MISSING, status_code=400)
    outcome = await runtime.sms.send(tenant, recipient, body, is_test_flag(test))
    return OrjsonResponse(outcome.body(), status_code=500 if outcome.error else 200)
