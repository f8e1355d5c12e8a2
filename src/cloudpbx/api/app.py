"""`create_app`: the ASGI application over a Runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cloudpbx import __version__
from cloudpbx.api import ws
from cloudpbx.api.errors import install_error_handlers
from cloudpbx.api.routes import actions, calls, health, sms_callbacks
from cloudpbx.runtime import Runtime

DESCRIPTION = """\
The CloudPBX API 1.3: call records, recordings and transcriptions of a virtual PBX,
calls placed on demand, SMS, and the PBX's live events on a WebSocket
(`/ws/pbx_{NAME}?pbxkey=KEY`, see the project's docs/websocket.md).
Every endpoint takes `Authorization: Bearer KEY`."""


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> FastAPI:
    """The API over `runtime`; with `manage_runtime` the app starts and stops it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                await runtime.stop()

    app = FastAPI(
        title="CloudPBX API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(calls.router)
    app.include_router(actions.router)
    app.include_router(health.router)
    app.router.routes.append(ws.route)
    app.include_router(sms_callbacks.router)
    return app
