"""`/callbacks/smsapi/{pbx}/{token}`: SMSAPI's delivery reports (docs/sms.md).

Not part of the client API (no key, not in the OpenAPI document): SMSAPI calls the
`notify_url` each message was sent with. The token authenticates the PBX (an HMAC of its
name, checked in constant time before anything else); a wrong token, an unknown PBX or a
server without SMSAPI accounts get the same 404 as any unknown path. The reports apply
only to that PBX's own messages, once and never backwards, and the answer is `OK`, which
tells SMSAPI the reports arrived (also for entries that named no message of the PBX:
sending them again would not change that).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from cloudpbx.adapters.smsapi import CALLBACK_PREFIX, parse_callback
from cloudpbx.api.auth import RuntimeDep
from cloudpbx.api.responses import json_error
from cloudpbx.storage.tenants import PBX_NAME

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


def _not_found() -> Response:
    return json_error(404, "no such endpoint", "not_found")


@router.api_route(CALLBACK_PREFIX + "/{pbx}/{token}", methods=["GET", "POST"])
async def smsapi_delivery_report(
    pbx: str, token: str, request: Request, runtime: RuntimeDep
) -> Response:
    signer = runtime.sms_callbacks
    if signer is None or not PBX_NAME.fullmatch(pbx) or not signer.verify(pbx, token):
        return _not_found()
    tenant = await runtime.tenants.get(pbx)
    if tenant is None:
        return _not_found()
    params = {key: value for key, value in request.query_params.items()}
    if request.method == "POST":
        form = await request.form()
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    parsed = parse_callback(params)
    if not parsed.reports and not parsed.skipped:
        return json_error(400, "a delivery report needs MsgId and status", "invalid_report")
    outcome = await runtime.sms.apply_reports(tenant, parsed.reports)
    log.info(
        "SMSAPI report on %s: %d entries, %d applied, %d unknown, %d unreadable",
        pbx,
        len(parsed.reports),
        outcome.applied,
        outcome.unknown,
        parsed.skipped,
    )
    return PlainTextResponse("OK")
