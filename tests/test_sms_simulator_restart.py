"""The simulated SMS gateway survives a restart like the SMSAPI path does.

A real `cloudpbx serve` process takes a message and is stopped right after (SIGTERM, or
kill -9) before any status step; a server started on the same database then walks the
message to its final status, and the WebSocket (replaying from the start) carries every
step exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from cloudpbx.domain.states import SmsStatus
from cloudpbx.runtime import build_runtime
from cloudpbx.storage.sms import Outbox
from tests.conftest import Tenants, create_tenants
from tests.live import make_settings, running

# Long enough that the server is stopped before the first step comes due.
FIRST_RUN_STEP = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_process(data_dir: Path, database_url: str, port: int) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "CLOUDPBX_BACKEND": "none",
        "CLOUDPBX_SMS_GATEWAY": "simulator",
        "CLOUDPBX_SMS_SIMULATOR_STEP": str(FIRST_RUN_STEP),
        "CLOUDPBX_LOG_LEVEL": "warning",
    }
    command = [str(Path(sys.executable).with_name("cloudpbx")), "serve"]
    command += ["--data", str(data_dir), "--port", str(port)]
    if database_url:
        command += ["--database-url", database_url]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


async def _wait_healthy(client: httpx.AsyncClient, process: subprocess.Popen[str]) -> None:
    async with asyncio.timeout(60):
        while True:
            assert process.poll() is None, process.communicate()[0]
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


async def _prepare(data_dir: Path, database_url: str, tenants: Tenants) -> None:
    runtime = build_runtime(make_settings(data_dir, database_url))
    try:
        await runtime.migrate()
        await create_tenants(runtime, tenants)
    finally:
        await runtime.engine.dispose()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_simulated_sms_reaches_its_final_status_after_a_restart(
    tmp_path: Path, database_url: str, stop: signal.Signals
) -> None:
    # Fresh names: the PostgreSQL database is shared by the session's tests.
    suffix = secrets.token_hex(3)
    tenants = Tenants(a_name=f"Sms{suffix}", b_name=f"Other{suffix}")
    await _prepare(tmp_path, database_url, tenants)
    port = _free_port()
    with serve_process(tmp_path, database_url, port) as process:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {tenants.a_key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
            await _wait_healthy(client, process)
            sent = await client.post("/sendSMS", data={"to": "600100200", "body": "po restarcie"})
        process.send_signal(stop)
        process.wait(timeout=30)
    assert sent.status_code == 200 and sent.json()["responseStatus"] == "QUEUE"
    response_id = sent.json()["responseId"]

    settings = make_settings(tmp_path, database_url, sms_simulator_step=0.05)
    async with running(settings) as server:
        tenant = await server.runtime.tenants.require(tenants.a_name)
        before = await server.runtime.sms_store.item(tenant, response_id)
        assert before is not None and before.outbox is Outbox.ACCEPTED
        assert before.status is SmsStatus.QUEUE  # stopped before its first step

        url = f"{server.ws_url}/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}&last_event_id=0"
        seen: list[dict[str, Any]] = []
        async with connect(url, proxy=None, open_timeout=5) as ws, asyncio.timeout(20):
            while not seen or seen[-1]["status"] != "DELIVERED":
                text = orjson.loads(await ws.recv())["text"]
                if text.get("smsSendResponse", {}).get("MsgId") == response_id:
                    seen.append(text["smsSendResponse"])
        assert seen == [
            {"MsgId": response_id, "to": "48600100200", "status": status}
            for status in ("ACCEPTED", "SENT", "DELIVERED")
        ]
        after = await server.runtime.sms_store.item(tenant, response_id)
        assert after is not None and after.status is SmsStatus.DELIVERED
        assert await server.runtime.sms_store.history(tenant, response_id) == [
            SmsStatus.QUEUE,
            SmsStatus.ACCEPTED,
            SmsStatus.SENT,
            SmsStatus.DELIVERED,
        ]


async def test_a_running_server_looks_each_message_up_at_most_once(tmp_path: Path) -> None:
    """Without a restart the pushed steps do the work: the dispatcher's one look at the
    accepted message (once its whole path is due) adds nothing to its history."""
    tenants = Tenants()
    settings = make_settings(tmp_path, sms_simulator_step=0.05, sms_dispatch_interval=0.02)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        async with server.client(tenants.a_key) as client:
            sent = await client.post("/sendSMS", data={"to": "600100000", "body": "x"})
        response_id = sent.json()["responseId"]
        tenant = await server.runtime.tenants.require(tenants.a_name)
        async with asyncio.timeout(10):
            while True:
                item = await server.runtime.sms_store.item(tenant, response_id)
                assert item is not None
                if item.status.is_final:
                    break
                await asyncio.sleep(0.02)
        assert item.status is SmsStatus.UNDELIVERED  # numbers ending 000
        assert item.gateway_id is not None and item.gateway_id.startswith("sim-")
        # The message is final: the dispatcher never looks at it again.
        await asyncio.sleep(1.5)
        assert await server.runtime.sms_store.history(tenant, response_id) == [
            SmsStatus.QUEUE,
            SmsStatus.ACCEPTED,
            SmsStatus.SENT,
            SmsStatus.UNDELIVERED,
        ]
