"""No API key or callback token in any log line: the redaction, on a live server's own
access and error logs, and the session-wide guard (tests/log_guard.py) that fails a test
session when a key is logged."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from cloudpbx.adapters.smsapi import CALLBACK_PREFIX
from cloudpbx.api.redaction import install_log_redaction, redact
from tests.conftest import Tenants
from tests.live import LiveServer

ROOT = Path(__file__).resolve().parent.parent

KEY = "cpbx_AbCdEfGh0123456789-_xyz"
IMPORTED = "MyExistingKey123"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            f'127.0.0.1:5 - "GET /ws/pbx_A?pbxkey={IMPORTED}&last_event_id=3 HTTP/1.1" 101',
            '127.0.0.1:5 - "GET /ws/pbx_A?pbxkey=[redacted]&last_event_id=3 HTTP/1.1" 101',
        ),
        (f"ws://h/ws/pbx_A?PBXKEY={IMPORTED}", "ws://h/ws/pbx_A?PBXKEY=[redacted]"),
        (f"next=%2Fws%3Fpbxkey%3D{IMPORTED}", "next=%2Fws%3Fpbxkey%3D[redacted]"),
        (f"Authorization: Bearer {IMPORTED}", "Authorization: [redacted]"),
        (
            f"[(b'authorization', b'Bearer {IMPORTED}')]",
            "[(b'authorization', b'Bearer [redacted]')]",
        ),
        (f"{{'Authorization': 'Basic {IMPORTED}'}}", "{'Authorization': '[redacted]'}"),
        (f"unknown key {KEY} refused", "unknown key cpbx_[redacted] refused"),
        (
            f"{CALLBACK_PREFIX}/MojaCentrala/t0k3n?MsgId=1",
            f"{CALLBACK_PREFIX}/MojaCentrala/[redacted]?MsgId=1",
        ),
        ("GET /cdr?date_from=2024-01-01 200", "GET /cdr?date_from=2024-01-01 200"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.fixture
def server_log(live: tuple[LiveServer, Tenants]) -> Iterator[list[str]]:
    """Every line the live server's loggers write from now on, as their handlers format it."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error", "cloudpbx")]
    handler = Collect()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    for logger in loggers:
        logger.addHandler(handler)
    yield lines
    for logger in loggers:
        logger.removeHandler(handler)


async def test_live_server_logs_no_key(
    live: tuple[LiveServer, Tenants], server_log: list[str]
) -> None:
    server, tenants = live
    channel = f"{server.ws_url}/ws/pbx_{tenants.a_name}"
    async with websockets.connect(f"{channel}?pbxkey={tenants.a_key}", open_timeout=10):
        pass  # accepted
    for wrong in (tenants.b_key, tenants.revoked_key, tenants.a_key[:-1] + "x"):
        with pytest.raises(InvalidStatus):  # wrong PBX, revoked, mistyped
            await websockets.connect(f"{channel}?pbxkey={wrong}", open_timeout=10)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await client.get("/cdr", params={"pbxkey": tenants.a_key})
        await client.get("/cdr", headers={"Authorization": f"Bearer {tenants.b_key}"})
        await client.get(f"{CALLBACK_PREFIX}/{tenants.a_name}/secret-token-value")
    text = "\n".join(server_log)
    assert text.count("pbxkey=[redacted]") >= 5, text  # the lines are there, redacted
    assert f"{CALLBACK_PREFIX}/{tenants.a_name}/[redacted]" in text
    for secret in (tenants.a_key, tenants.b_key, tenants.revoked_key, "secret-token-value"):
        assert secret not in text
    assert "cpbx_" not in text.replace("cpbx_[redacted]", "")


def test_tracebacks_are_redacted() -> None:
    install_log_redaction()
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger = logging.getLogger("cloudpbx.tests.redaction")
    handler = Collect()
    logger.addHandler(handler)
    try:
        try:
            raise ConnectionError(f"cannot open ws://h/ws/pbx_A?pbxkey={IMPORTED}")
        except ConnectionError:
            logger.exception("client failed with Authorization: Bearer %s", IMPORTED)
    finally:
        logger.removeHandler(handler)
    (line,) = lines
    assert "ConnectionError: cannot open ws://h/ws/pbx_A?pbxkey=[redacted]" in line
    assert "Authorization: [redacted]" in line
    assert IMPORTED not in line


GUARDED_SESSION = """
import asyncio
import logging

from cloudpbx.api.redaction import install_log_redaction
from cloudpbx.runtime import build_runtime
from cloudpbx.settings import Settings


def test_logs_a_key(tmp_path):
    async def create():
        runtime = build_runtime(Settings(data_dir=tmp_path, backend="none"))
        await runtime.migrate()
        await runtime.tenants.create("MojaCentrala", "Europe/Warsaw")
        key = await runtime.tenants.create_key("MojaCentrala", value="ImportedKey123456")
        await runtime.engine.dispose()
        return key

    key = asyncio.run(create())
    if REDACT:
        install_log_redaction()
    logging.getLogger("cloudpbx.example").warning("GET /ws/pbx_MojaCentrala?pbxkey=%s", key)
"""


@pytest.mark.parametrize("redacted", [False, True], ids=["logged", "redacted"])
def test_session_guard_fails_a_session_that_logs_a_key(tmp_path: Path, redacted: bool) -> None:
    test_file = tmp_path / "test_guarded.py"
    test_file.write_text(textwrap.dedent(GUARDED_SESSION).replace("REDACT", str(redacted)))
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "tests.log_guard", "-p", "no:cacheprovider"),
            *("-q", "--rootdir", str(tmp_path), str(test_file)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert "1 passed" in output, output
    assert "ImportedKey123456" not in output  # the report masks the key it found
    if redacted:
        assert run.returncode == 0, output
        assert "show an API key" not in output
    else:
        assert run.returncode == 1, output
        assert "log guard: 1 log records show an API key" in output
        assert "pbxkey=<API KEY>" in output
