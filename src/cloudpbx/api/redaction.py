"""Secrets out of every log line: `pbxkey=`, `Authorization`/`Bearer`, callback tokens.

uvicorn's access log prints each path with its query string, so the WebSocket URL
`/ws/pbx_X?pbxkey=KEY` (and the SMSAPI callback URL, whose last segment is a token) would
reach the log for every connection, accepted or refused. The redaction is installed as
the log-record factory rather than as a handler filter: it then covers every handler,
also those an operator adds with `--log-config` and those added after start-up, and it
rewrites the message arguments in place so that formatters reading `record.args` by
position (uvicorn's access formatter) keep working where they can. Tracebacks are formatted once and
redacted too (`exc_text`), since exception messages may carry the request URL.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from typing import Any

from cloudpbx.adapters.smsapi import CALLBACK_PREFIX

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A query parameter, raw or percent-encoded inside a larger URL.
    (re.compile(r"(?i)(pbxkey(?:=|%3D))[^&\s'\"#]+"), rf"\1{REDACTED}"),
    (
        re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?)(?:\w+\s+)?[^\s'\",;]+"),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)(\bbearer\s+)[^\s'\",;]+"), rf"\1{REDACTED}"),
    (re.compile(r"\bcpbx_[A-Za-z0-9_-]+"), f"cpbx_{REDACTED}"),
    (
        re.compile(re.escape(CALLBACK_PREFIX) + r"/([^/\s?]+)/[^/\s?'\"]+"),
        rf"{CALLBACK_PREFIX}/\1/{REDACTED}",
    ),
)
_MARKERS = ("pbxkey", "bearer", "authorization", "cpbx_", CALLBACK_PREFIX)


def redact(text: str) -> str:
    """`text` with every API key, bearer token and callback token replaced."""
    lowered = text.lower()
    if not any(marker.lower() in lowered for marker in _MARKERS):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(value: object) -> object:
    if value is None or isinstance(value, int | float):
        return value  # keeps %d and %f working
    return redact(value if isinstance(value, str) else str(value))


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Rewrite `record` in place: message, traceback and stack text.

    A secret may only appear once the message is formatted (`"pbxkey=%s", key`), so the
    formatted message is what is checked. Where redacting the arguments one by one is
    enough, the template and the argument tuple are kept (uvicorn's access formatter
    reads them by position); otherwise the record carries the redacted text alone.
    """
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports it, with nothing to redact
        message = None
    if message is not None and redact(message) != message:
        args = _redacted_args(record.args)
        try:
            formatted = str(record.msg) % args if args else str(record.msg)
        except (TypeError, ValueError, KeyError):
            formatted = message
        if isinstance(record.msg, str) and redact(formatted) == formatted:
            record.args = args
        else:
            record.msg, record.args = redact(message), ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def _redacted_args(args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(_redact_arg(arg) for arg in args)
    if isinstance(args, dict):
        return {key: _redact_arg(value) for key, value in args.items()}
    return args


_installed: list[Callable[..., logging.LogRecord]] = []


def install_log_redaction() -> None:
    """Make every log record of the process pass through `redact_record` (idempotent)."""
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    _installed.append(factory)
    logging.setLogRecordFactory(factory)
