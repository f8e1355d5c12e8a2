"""The API key cache across server processes (storage/key_cache.py): two servers on one
database, each with its own cache, as two processes of one deployment. A key revoked
through one is refused by it at once and by the other within `auth_cache_ttl`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.live import make_settings, running
from tests.test_api_rest import http
from tests.test_storage_support import unique_name

TTL = 0.5


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
