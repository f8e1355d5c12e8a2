"""`/healthz`: liveness and readiness for load balancers and operators."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from cloudpbx import __version__
from cloudpbx.api.auth import RuntimeDep
from cloudpbx.api.responses import OrjsonResponse

router = APIRouter()


@router.get(
    "/healthz",
    tags=["operations"],
    summary="Health of the server and its database",
    responses={
        200: {"description": '`{"status": "ok", "version": ..., "database": "ok"}`'},
        503: {"description": '`"status": "degraded"`: the database does not answer'},
    },
)
async def healthz(runtime: RuntimeDep) -> Response:
    try:
        async with runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # the check must answer, whatever the driver raised
        database = f"error: {type(exc).__name__}"
    ok = database == "ok"
    return OrjsonResponse(
        {"status": "ok" if ok else "degraded", "version": __version__, "database": database},
        status_code=200 if ok else 503,
    )
