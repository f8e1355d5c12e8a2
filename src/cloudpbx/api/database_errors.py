"""Telling "the database cannot be reached now" from a bug, so that a request that met a
down or restarting database gets 503 with `Retry-After` (the client's answer: try again
soon), not 500 (ours: something is broken) — docs/operations.md, "Bad days"."""

from __future__ import annotations

import socket
import traceback

from sqlalchemy.exc import DBAPIError

UNAVAILABLE_SQLSTATES = ("08", "57P")
"""PostgreSQL's classes for it: connection exceptions (08xxx) and operator intervention
(57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now: restarting)."""


DATABASE_ERROR_KINDS: tuple[type[Exception], ...] = (
    DBAPIError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)
"""The exception classes `database_unavailable` may say yes to."""


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is unreachable rather than that a query is wrong."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:  # the connection dropped under the query
            return True
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(code, str) and code.startswith(UNAVAILABLE_SQLSTATES)
    if isinstance(exc, DATABASE_ERROR_KINDS):
        # SQLAlchemy passes a failed connect of asyncpg's through unwrapped (an OSError,
        # not a DBAPI error); only one raised inside SQLAlchemy is the database's.
        return _raised_inside_sqlalchemy(exc)
    return False


def _raised_inside_sqlalchemy(exc: BaseException) -> bool:
    return any(
        frame.f_globals.get("__name__", "").startswith("sqlalchemy.")
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )
