"""The API key cache across server processes (storage/key_cache.py): two servers on one
database, each with its own cache, as two processes of one deployment. A key revoked
through one is refused by it at once and by the other within `auth_cache_ttl`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.live import make_settings, running
from tests.test_api_rest import http
from tests.test_storage_support import unique_name
from tests.test_ws_kill9 import free_port, wait_healthy

TTL = 0.5
CLOUDPBX = str(Path(sys.executable).with_name("cloudpbx"))


async def test_revocation_reaches_the_other_server_within_the_ttl(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth_cache_ttl=TTL)
    async with running(settings) as first, running(settings) as second:
        name = unique_name("Keys")
        await first.runtime.tenants.create(name)
        key = await first.runtime.tenants.create_key(name)
        (info,) = await first.runtime.tenants.list_keys(name)
        async with http(first, key) as one, http(second, key) as two:
            assert (await one.get("/cdr")).status_code == 200
            assert (await two.get("/cdr")).status_code == 200  # now cached there

            await first.runtime.tenants.revoke_key(info.id)
            refused = await one.get("/cdr")
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_key")

            await asyncio.sleep(TTL * 1.2)
            refused = await two.get("/cdr")
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_key")


async def test_ttl_zero_reads_the_key_on_every_request(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth_cache_ttl=0)
    async with running(settings) as first, running(settings) as second:
        name = unique_name("Keys")
        await first.runtime.tenants.create(name)
        key = await first.runtime.tenants.create_key(name)
        (info,) = await first.runtime.tenants.list_keys(name)
        async with http(second, key) as two:
            assert (await two.get("/cdr")).status_code == 200
            await first.runtime.tenants.revoke_key(info.id)
            assert (await two.get("/cdr")).status_code == 401


def _cli(data: Path, *args: str) -> str:
    done = subprocess.run(
        [CLOUDPBX, *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def _serve(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CLOUDPBX_BACKEND": "none",
        "CLOUDPBX_SMS_GATEWAY": "none",
        "CLOUDPBX_AUTH_CACHE_TTL": str(TTL),
    }
    return subprocess.Popen(
        [CLOUDPBX, "serve", "--data", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_cli_revocation_reaches_a_server_process_within_the_ttl(tmp_path: Path) -> None:
    """The operator's path end to end: `cloudpbx key revoke` in one process, a running
    `cloudpbx serve` in another, each with its own memory."""
    data = tmp_path / "data"
    _cli(data, "pbx", "add", "KeyCachePbx")
    key = _cli(data, "key", "create", "KeyCachePbx").strip()
    port = free_port()
    server = _serve(data, port)
    try:
        await wait_healthy(port)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/cdr", headers=headers)).status_code == 200
            _cli(data, "key", "revoke", "1")  # the first key of a new database
            await asyncio.sleep(TTL * 1.2)
            refused = await client.get("/cdr", headers=headers)
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_key")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
