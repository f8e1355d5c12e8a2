"""SqliteReaders: the hot reads' own SQLite connections (storage/reads.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, select

from cloudpbx.storage.database import create_engine
from cloudpbx.storage.migrate import upgrade
from cloudpbx.storage.reads import Read, SqliteReaders
from cloudpbx.storage.tables import cdr
from cloudpbx.storage.tenants import TenantStore
from tests.test_storage_support import cdr_record, open_stores, unique_name


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite:///{tmp_path / 'cloudpbx.db'}"
    engine = create_engine(url)
    await upgrade(engine)
    await engine.dispose()
    yield url


async def test_readers_see_each_commit_at_once(sqlite_url: str) -> None:
    async with open_stores(sqlite_url) as stores:
        assert stores.calls._readers is not None  # the path under test
        tenant = await stores.tenant()
        count = Read(
            select(func.count()).where(cdr.c.pbx_id == bindparam("pbx")),
            stores.engine.dialect,
        )
        readers = stores.calls._readers
        noon = datetime(2026, 3, 10, 11, tzinfo=UTC)
        for expected in range(1, 9):  # more reads than connections: every one is current
            await stores.calls.add_cdrs(tenant, [cdr_record(noon, f"1.{expected}")])
            assert await readers.one(count, {"pbx": tenant.id}) == (expected,)


async def test_readers_never_write(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    readers = SqliteReaders.for_engine(engine)
    assert readers is not None
    try:
        await readers.first(Read(select(func.count(cdr.c.id)), engine.dialect), {})
        for conn in readers._connections:
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await conn.execute("DELETE FROM cdr")
    finally:
        await readers.close()
        await engine.dispose()


async def test_a_key_created_elsewhere_is_found_by_the_readers(sqlite_url: str) -> None:
    engine, elsewhere = create_engine(sqlite_url), create_engine(sqlite_url)
    readers = SqliteReaders.for_engine(engine)
    try:
        store = TenantStore(engine, readers=readers)
        other = TenantStore(elsewhere)  # another process
        name = unique_name()
        await other.create(name)
        key = await other.create_key(name)
        found = await store.authenticate(key)
        assert found is not None and found.name == name
    finally:
        if readers is not None:
            await readers.close()
        await engine.dispose()
        await elsewhere.dispose()


def test_only_sqlite_files_get_readers() -> None:
    assert SqliteReaders.for_engine(create_engine("sqlite:///:memory:")) is None
    assert SqliteReaders.for_engine(create_engine("postgresql://u:p@127.0.0.1/db")) is None
