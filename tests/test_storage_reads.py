"""SqliteReaders: the hot reads' own SQLite connections (storage/reads.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, literal, select

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


async def test_reads_over_the_budget_finish_on_a_thread_with_the_same_rows(
    sqlite_url: str,
) -> None:
    """A read that outlasts the inline budget is interrupted on the loop's thread and run
    again on a reader's thread; a read within it never reaches a thread."""
    engine = create_engine(sqlite_url)
    tenants = TenantStore(engine)
    name = unique_name()
    await tenants.create(name)
    # A recursive count to a million: ~0.1 s of VM steps in any SQLite.
    numbers = select(literal(1).label("i")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.i + 1).where(numbers.c.i < 1_000_000))
    slow = Read(select(func.count()).select_from(numbers), engine.dialect)
    quick = Read(select(func.count()).select_from(cdr), engine.dialect)
    strict = SqliteReaders(sqlite_url.removeprefix("sqlite:///"), inline_budget=0.0001)
    try:
        assert await strict.first(quick, {}) == (0,)
        assert strict._connections == []  # answered inline, no thread was needed
        assert await strict.first(slow, {}) == (1_000_000,)
        assert len(strict._connections) == 4  # the thread path took it
    finally:
        await strict.close()
        await engine.dispose()


async def test_large_reads_skip_the_inline_try(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    readers = SqliteReaders(sqlite_url.removeprefix("sqlite:///"))
    try:
        large = Read(select(func.count()).select_from(cdr), engine.dialect, may_be_large=True)
        assert await readers.first(large, {}) == (0,)
        assert readers._inline is None and len(readers._connections) == 4
    finally:
        await readers.close()
        await engine.dispose()
