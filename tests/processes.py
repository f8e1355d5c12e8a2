"""Real `cloudpbx serve` processes for the multi-process tests (no tests here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from cloudpbx.runtime import build_runtime
from cloudpbx.settings import Settings
from tests.conftest import PG_ADMIN_DSN

# The event engine the multi-process tests name (`serve --workers N` refuses to start
# without one); the engine's own tests say what it must be.
ENGINE_URL = os.environ.get("CLOUDPBX_TEST_NATS", "nats://127.0.0.1:4222")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    """A PostgreSQL database of its own (tenant names may repeat across test modules)."""
    name = f"cloudpbx_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def seed_database(url: str, data_dir: Path, pbx: str, key: str) -> None:
    """Migrates the database the nodes share and adds `pbx` with the API key `key`, before
    any node starts (each node then finds its schema and tenant ready)."""
    runtime = build_runtime(Settings(database_url=url, data_dir=data_dir))
    await runtime.migrate()
    await runtime.tenants.create(pbx, "Europe/Warsaw", None)
    await runtime.tenants.create_key(pbx, "tests", key)
    await runtime.engine.dispose()


def serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cloudpbx serve ARGS` with `env` added to ours, stdout and stderr into `log`."""
    cloudpbx = Path(sys.executable).with_name("cloudpbx")
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(cloudpbx), "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "CLOUDPBX_SMS_GATEWAY": "none",
                "CLOUDPBX_TRANSCRIPTION_ENGINE": "none",
                **env,
            },
        )


async def healthz(port: int, *, fresh: bool = True) -> dict[str, Any] | None:
    """/healthz on a new connection (so a listening socket shared by workers picks one)."""
    headers = {"Connection": "close"} if fresh else {}
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz", headers=headers)
    except httpx.TransportError:
        return None
    body: dict[str, Any] = response.json()
    return body


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    for _ in range(int(seconds * 10)):
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        if await healthz(port) is not None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no server on port {port} after {seconds:g} s")


async def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal `proc` (if still running) and wait for it; its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        return await asyncio.to_thread(proc.wait, 45)
    except subprocess.TimeoutExpired:
        proc.kill()
        return await asyncio.to_thread(proc.wait)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status
