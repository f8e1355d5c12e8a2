"""Shared fixtures: databases (SQLite and PostgreSQL) and live servers with tenants."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from cloudpbx.runtime import Runtime
from tests.live import LiveServer, make_settings, running, start_server

pytest_plugins = (
    "tests.lab_fixtures",  # the Asterisk lab, one per test session
    "tests.log_guard",  # fails the session if a log record shows an API key
)

PG_ADMIN_DSN = os.environ.get("CLOUDPBX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Tenants:
    """Two PBXes with a key each, for isolation tests; A has the SMS gateway."""

    a_name: str = "MojaCentrala"
    b_name: str = "InnaCentrala"
    a_key: str = ""
    b_key: str = ""
    revoked_key: str = ""


async def create_tenants(runtime: Runtime, tenants: Tenants) -> None:
    await runtime.tenants.create(tenants.a_name, "Europe/Warsaw", sms_gateway="simulator")
    await runtime.tenants.create(tenants.b_name, "Europe/Warsaw")
    tenants.a_key = await runtime.tenants.create_key(tenants.a_name, "tests")
    tenants.b_key = await runtime.tenants.create_key(tenants.b_name, "tests")
    tenants.revoked_key = await runtime.tenants.create_key(tenants.a_name, "revoked")
    for info in await runtime.tenants.list_keys(tenants.a_name):
        if info.label == "revoked":
            await runtime.tenants.revoke_key(info.id)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (the test command starts PG)."""
    yield from scratch_pg_database("cloudpbx_test")


def scratch_pg_database(prefix: str) -> Iterator[str]:
    """For a synchronous fixture: the URL of a new PostgreSQL database named `prefix_...`,
    dropped when the fixture's teardown resumes this generator."""
    import asyncio

    name = f"{prefix}_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both engines; each PostgreSQL use gets its own schema-free database name suffix."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloudpbx.db'}"
    base: str = request.getfixturevalue("pg_database")
    return base


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, Tenants]]:
    """A server on SQLite with two tenants and no PBX backend (deterministic data)."""
    tenants = Tenants()
    server = await start_server(
        make_settings(tmp_path), prepare=lambda runtime: create_tenants(runtime, tenants)
    )
    try:
        yield server, tenants
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def pinging(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[LiveServer, Tenants]]:
    """A server whose keep-alive pings every 0.2 s and gives up after 0.4 s without a pong."""
    tenants = Tenants()
    settings = make_settings(
        tmp_path_factory.mktemp("ping"), ws_ping_interval=0.2, ws_ping_timeout=0.4
    )
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        yield server, tenants
