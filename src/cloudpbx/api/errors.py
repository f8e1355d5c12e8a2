"""The one place where errors become HTTP answers.

Client mistakes get `{"error": "<what is wrong>", "code": "<slug>"}` with a fitting status;
the document's own plain-text answers (`Parameter is missing`, `Action Error`) are sent
by their endpoints as documented.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cloudpbx.api.database_errors import DATABASE_ERROR_KINDS, database_unavailable
from cloudpbx.api.responses import json_error
from cloudpbx.domain.errors import ApiError

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    416: "range_not_satisfiable",
}

RETRY_AFTER_S = "1"
"""A PostgreSQL restart or fail-over is seconds: ask again soon."""

# RFC 9110 §11.6.1: a 401 must say which scheme would be accepted.
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        headers = _CHALLENGE if exc.status == 401 else None
        return json_error(exc.status, exc.message, exc.code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "query")
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return json_error(400, "; ".join(problems) or "invalid request", "invalid_parameter")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        if exc.status_code == 405 and message == "Method Not Allowed":
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {request.method} is not allowed on {request.url.path}; use {allowed}"
        return json_error(exc.status_code, message, code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_error(500, "internal server error", "internal")

    async def _database(request: Request, exc: Exception) -> Response:
        """Registered by class (not through the catch-all above, which Starlette re-raises
        to the server's log after answering): a bad day is one line, not a traceback."""
        if not database_unavailable(exc):
            return await _unexpected(request, exc)
        # The driver's own words only: a DBAPI error's text would carry the statement and
        # its parameters.
        cause = getattr(exc, "orig", None) or exc
        log.warning(
            "database unavailable on %s %s: %s: %s",
            request.method, request.url.path, type(cause).__name__, cause,
        )  # fmt: skip
        return json_error(
            503, "database unavailable; retry shortly", "database_unavailable",
            headers={"Retry-After": RETRY_AFTER_S},
        )  # fmt: skip

    for kind in DATABASE_ERROR_KINDS:
        app.add_exception_handler(kind, _database)
