"""A pytest plugin: the whole test session fails if any log record shows an API key.

Every key the tests create goes through `TenantStore.create_key`; the plugin notes each
one it returns. Every record any logger of this process handles (whatever its handlers,
`propagate` or uvicorn's own logging config) goes through `Logger.callHandlers`; the plugin
keeps its text (message, traceback, stack). At the end of the session each text is
searched for every key. Registered by tests/conftest.py; tests/test_log_redaction.py
runs it on a session that logs a key to show that it fails.
"""

from __future__ import annotations

import functools
import logging
import re
import traceback
from typing import Any

import pytest

from cloudpbx.storage.tenants import TenantStore


class KeyLogGuard:
    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.texts: list[str] = []

    def note_record(self, record: logging.LogRecord) -> None:
        try:
            parts = [record.getMessage()]
        except Exception:  # a record with bad arguments: keep what it has
            parts = [str(record.msg), repr(record.args)]
        if record.exc_text:
            parts.append(record.exc_text)
        elif record.exc_info and record.exc_info[0] is not None:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
        if record.stack_info:
            parts.append(record.stack_info)
        self.texts.append(f"{record.name}: " + "\n".join(parts))

    def leaks(self) -> list[str]:
        """The texts that show a key, with the key masked (the report must not leak it)."""
        if not self.keys:
            return []
        pattern = re.compile("|".join(re.escape(key) for key in sorted(self.keys, key=len)[::-1]))
        return [pattern.sub("<API KEY>", text) for text in self.texts if pattern.search(text)]


GUARD = KeyLogGuard()


def pytest_configure(config: pytest.Config) -> None:
    create_key = TenantStore.create_key

    @functools.wraps(create_key)
    async def noting_create_key(self: TenantStore, *args: Any, **kwargs: Any) -> str:
        key = await create_key(self, *args, **kwargs)
        GUARD.keys.add(key)
        return key

    call_handlers = logging.Logger.callHandlers

    def noting_call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
        GUARD.note_record(record)
        call_handlers(self, record)

    TenantStore.create_key = noting_create_key  # type: ignore[method-assign]
    logging.Logger.callHandlers = noting_call_handlers  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = GUARD.leaks()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"log guard: {len(GUARD.texts)} log records checked for {len(GUARD.keys)} API keys"
        )
    if not leaks:
        return
    if reporter is not None:
        reporter.write_line(f"log guard: {len(leaks)} log records show an API key:", red=True)
        for text in leaks[:20]:
            reporter.write_line("  " + text.replace("\n", "\n  "))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
