"""`/metrics`: the Prometheus text format, for the operator's scraper only.

Who may read it: with `metrics_token` set, whoever sends it as `Authorization: Bearer`;
without, clients on the loopback interface only, and never a request that came through a
proxy (one with `X-Forwarded-For` or `Forwarded`: a reverse proxy on the same host would
otherwise make every Internet client look local). The metrics name no PBX and carry no
key, but they tell how busy the service is and which Asterisk servers are down: nothing
for the public, and a token or loopback is all a Prometheus needs. A wrong token is a
401 like a wrong API key, so the auth throttle limits guessing too.

It never answers 500: should the exposition fail (an unreadable multi-process file), the
answer is a 503 the scraper records as a failed scrape, and the log says why.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from cloudpbx.api.auth import RuntimeDep, bearer_token
from cloudpbx.api.responses import json_error
from cloudpbx.metrics.registry import CONTENT_TYPE

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    refusal = _refusal(request, runtime.settings.metrics_token)
    if refusal is not None:
        return refusal
    try:
        runtime.sampler.sample()
        body = runtime.metrics.exposition()
    except Exception as exc:  # the scrape must get an answer, whatever failed
        log.exception("metrics: exposition failed")
        return json_error(503, f"metrics unavailable: {type(exc).__name__}", "metrics_unavailable")
    return Response(body, media_type=CONTENT_TYPE)


def _refusal(request: Request, token: str) -> Response | None:
    if token:
        given = bearer_token(request.headers.get("authorization")) or ""
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
        return json_error(
            401,
            "/metrics needs the metrics token as Authorization: Bearer",
            "metrics_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if _local(request):
        return None
    return json_error(
        403,
        "/metrics is served to loopback clients only; set metrics_token to scrape it remotely",
        "metrics_local_only",
    )


def _local(request: Request) -> bool:
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    host = request.client.host if request.client is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
