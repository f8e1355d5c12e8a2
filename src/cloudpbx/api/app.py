"""`create_app`: the ASGI application over a Runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from cloudpbx import __version__
from cloudpbx.api import ws
from cloudpbx.api.body_limits import BodyLimitMiddleware
from cloudpbx.api.docs_ui import install_docs
from cloudpbx.api.errors import install_error_handlers
from cloudpbx.api.request_metrics import RequestMetricsMiddleware
from cloudpbx.api.routes import actions, calls, health, metrics, sms_callbacks
from cloudpbx.api.security_headers import SecurityHeadersMiddleware
from cloudpbx.api.throttle import AuthThrottle, AuthThrottleMiddleware
from cloudpbx.panel import panel_routes
from cloudpbx.runtime import Runtime

OPENAPI_URL = "/openapi.json"
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
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL,
    )
    # `/cdr/` is a 404, not a redirect: Starlette builds the redirect's absolute URL from
    # the request's Host header, which would let anyone point it elsewhere.
    app.router.redirect_slashes = False
    app.state.runtime = runtime
    install_error_handlers(app)
    install_docs(app, OPENAPI_URL)
    app.include_router(calls.router)
    app.include_router(actions.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.router.routes.append(ws.route)
    app.include_router(sms_callbacks.router)
    app.router.routes.extend(panel_routes())
    install_middleware(app, runtime)
    return app


def install_middleware(app: FastAPI, runtime: Runtime) -> None:
    """Outermost first: request timing (it sees every answer, 429s included), headers
    on every answer, the throttle before anything reads a body or the database, then
    body limits and CORS."""
    settings = runtime.settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["X-Total-Count", "X-Truncated", "X-Resume"],
        )
    app.add_middleware(BodyLimitMiddleware, form_limit=settings.http_max_form_bytes)
    throttle = AuthThrottle(settings.auth_fail_limit, settings.auth_fail_window)
    app.add_middleware(AuthThrottleMiddleware, throttle=throttle)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestMetricsMiddleware, histogram=runtime.metrics.http_latency)
