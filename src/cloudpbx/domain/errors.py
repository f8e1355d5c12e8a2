"""Errors a client can cause, each with an HTTP status and a stable code.

Raised anywhere below the API; the API edge turns them into the contract's JSON error
`{"error": message, "code": code}` in one place (cloudpbx.api.errors).
"""

from __future__ import annotations


class ApiError(Exception):
    """A client-visible error: HTTP status, human message, stable machine code."""

    status = 400
    default_code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class BadRequest(ApiError):
    status = 400
    default_code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    default_code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    default_code = "forbidden"


class NotFound(ApiError):
    status = 404
    default_code = "not_found"


class Conflict(ApiError):
    status = 409
    default_code = "conflict"
