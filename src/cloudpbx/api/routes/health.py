"""`/healthz`: liveness and readiness for load balancers and operators."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from cloudpbx import __version__
from cloudpbx.api.auth import RuntimeDep
from cloudpbx.api.responses import OrjsonResponse
from cloudpbx.api.routes.dependencies import CHECK_TIMEOUT, FINE, dependencies
from cloudpbx.ports.pbx import ReportsHealth
from cloudpbx.services.engine_hub import EngineHub

router = APIRouter()


@router.get(
    "/healthz",
    tags=["operations"],
    summary="Health of the server and each of its dependencies",
    responses={
        200: {
            "description": '`{"status": "ok", "version": ..., "database": "ok", "pid": ..., '
            '"backends": [{"backend": "asterisk", "status": "ok", "dropped": 0}], "sms": [...], '
            '"dependencies": [{"name": "database", "status": "ok"}, ...]}` '
            "(docs/operations.md#health)"
        },
        503: {"description": '`"status": "degraded"`: the database does not answer'},
        # (200 `degraded` also when a dependency is down or an SMS account is held.)
    },
)
async def healthz(runtime: RuntimeDep) -> Response:
    """Public, so it names no PBX and no address: each backend's kind and status only
    (details: `cloudpbx asterisk check`). A backend that is down marks the answer
    `degraded` but keeps 200, since the stored data is still served; only a database
    that does not answer makes it 503."""
    try:
        # A database that went silent (a stalled network path) must not hang the check:
        # the load balancer needs the 503 to take this process out.
        async with asyncio.timeout(CHECK_TIMEOUT), runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # the check must answer, whatever the driver raised
        database = f"error: {type(exc).__name__}"
    backends = [_backend_status(backend) for backend in runtime.backends]
    # SMS gateways by kind: `held` (an account error, e.g. no credit: its messages wait)
    # or `alert` (e.g. SMSAPI refused our callback URL) make the answer `degraded`.
    sms = runtime.sms.health()
    ok = database == "ok"
    checks = await dependencies(runtime, database, sms)
    # The event engine, where one is configured: down, live events stop everywhere (every
    # process shares it), but stored data is still served: `degraded`, not 503.
    engine = runtime.hub.engine.health() if isinstance(runtime.hub, EngineHub) else None
    if engine is not None:
        checks.insert(1, {"name": "event_engine", "status": "ok" if engine == "ok" else "down"})
    healthy = (
        ok
        and all(item["status"] == "ok" for item in [*backends, *sms])
        and all(item["status"] in FINE for item in checks)
    )
    body: dict[str, object] = {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "database": database,
        # Which process answered (`serve --workers N` runs several on one port).
        "pid": os.getpid(),
        "backends": backends,
        "sms": sms,
        "dependencies": checks,
    }
    if engine is not None:
        body["event_engine"] = engine
    return OrjsonResponse(body, status_code=200 if ok else 503)


def _backend_status(backend: object) -> dict[str, str | int]:
    """Kind and status; `dropped` too where the backend counts events of no PBX (a
    number names nobody, and a growing one says a tenant rule is missing)."""
    kind = type(backend).__name__.removesuffix("Backend").lower()
    if not isinstance(backend, ReportsHealth):
        return {"backend": kind, "status": "ok"}
    health = backend.health()
    item: dict[str, str | int] = {"backend": kind, "status": str(health.get("status", "unknown"))}
    dropped = health.get("dropped")
    if isinstance(dropped, int):
        item["dropped"] = dropped
    return item
