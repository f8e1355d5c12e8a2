"""`/dial` and `/sendSMS`: what a client asks the PBX to do."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse, Response

from cloudpbx.api.auth import RuntimeDep, TenantDep
from cloudpbx.api.responses import CLIENT_ERRORS, ErrorBody, OrjsonResponse
from cloudpbx.api.routes.params import DIAL_PARAMETERS, check_dial
from cloudpbx.domain.sms import body_problem, is_test_flag, normalize_recipient

log = logging.getLogger(__name__)
router = APIRouter()


class SmsResponse(BaseModel):
    """The document's RESPONSE object (documentation only; SendOutcome.body() builds it)."""

    responseId: str = Field(description="19 digits; also the uniqueid of the SMS's CDR row")
    responseStatus: str = Field(description="QUEUE on success, FAILED when refused")
    responseErrorMessage: str | None = Field(description="null unless the gateway failed")


ACTION_ERROR = "Action Error"
PARAMETER_MISSING = "Parameter is missing"
# Every 400 of /sendSMS keeps the documented body and names the problem in this header.
ERROR_DETAIL = "X-Error-Detail"


@router.get(
    "/dial",
    tags=["actions"],
    summary="Call cpa, then connect it to cpb",
    # A class without a media type: the answers below are text, its errors JSON.
    response_class=Response,
    openapi_extra={"parameters": DIAL_PARAMETERS},
    responses={
        **CLIENT_ERRORS,
        200: {"content": {"text/plain": {"example": "OK"}}},
        500: {"content": {"text/plain": {"example": ACTION_ERROR}}},
    },
)
async def dial(request: Request, tenant: TenantDep, runtime: RuntimeDep) -> Response:
    """`OK` once the PBX accepted the call, `Action Error` (500) when it did not.

    A missing or malformed number, or cpb equal to cpa, is a 400 naming the problem.
    Not accepted also covers a cpa the backend already knows cannot ring (Asterisk
    reports its device unavailable: not registered or unreachable), rather than an `OK`
    that fails a millisecond later (docs/asterisk.md, "/dial").
    The `X-Originate-Id` header names the attempt, for matching the PBX's logs.
    """
    cpa, cpb = check_dial(request.query_params.get("cpa"), request.query_params.get("cpb"))
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
            "description": "`to` or `body` missing or invalid (a body longer than 6 SMS "
            "parts, 918 GSM-7 or 402 UCS-2 characters, is invalid); nothing is stored",
            "content": {"text/plain": {"example": PARAMETER_MISSING}},
            "headers": {
                ERROR_DETAIL: {
                    "description": "What is wrong, e.g. the body's length and the limit",
                    "schema": {"type": "string"},
                }
            },
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
    """The documented 400 body `Parameter is missing` answers every missing or invalid
    field, a too long body included (clients compare it); the `X-Error-Detail` header
    says which field and why, e.g. the body's parts and the 6-part limit."""
    runtime.sms.gateway_for(tenant)
    problem = _sms_problem(to, body)
    if problem is not None:
        return PlainTextResponse(
            PARAMETER_MISSING, status_code=400, headers={ERROR_DETAIL: problem}
        )
    recipient = normalize_recipient(to or "")
    assert recipient is not None and body is not None
    outcome = await runtime.sms.send(tenant, recipient, body, is_test_flag(test))
    return OrjsonResponse(outcome.body(), status_code=500 if outcome.error else 200)


def _sms_problem(to: str | None, body: str | None) -> str | None:
    """What is wrong with /sendSMS's fields, in words that never repeat the values (they
    go into a header)."""
    if not to:
        return "to is missing"
    if normalize_recipient(to) is None:
        return "to must be a nine-digit mobile number, optionally after 48 or +48"
    if body is None:
        return "body is missing"
    return body_problem(body)
