"""The /record and /transcription page cache never serves rows that changed, whichever
connection or process changed them (storage/revisions.py)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import date

import pytest

from cloudpbx.domain.dates import DateRange
from cloudpbx.domain.records import RecordingInfo, TranscriptionRecord
from cloudpbx.storage.jobs import DONE, JobStore
from cloudpbx.storage.json_rows import JsonPage
from cloudpbx.storage.tenants import Tenant
from tests.test_storage_support import Stores, at, open_stores

DAY = date(2026, 3, 10)


@pytest.fixture
async def two_stores(database_url: str) -> AsyncIterator[tuple[Stores, Stores]]:
    """Two sets of stores on one database, each with its engine, readers and page cache:
    what two server processes (or a server and the CLI) hold."""
    async with open_stores(database_url) as server, open_stores(database_url) as other:
        yield server, other


def rows(page: JsonPage) -> list[dict[str, str]]:
    loaded: list[dict[str, str]] = json.loads(page.body)
    return loaded


def recording(uniqueid: str, when: str, src: str = "101") -> RecordingInfo:
    return RecordingInfo(uniqueid, at(when), src, "102", "wav", f"{uniqueid}.wav", 10)


def transcript(uniqueid: str, when: str, src: str = "101") -> TranscriptionRecord:
    return TranscriptionRecord(uniqueid, at(when), src, "102", "tekst", "krótko")


async def pages(stores: Stores, tenant: Tenant) -> tuple[JsonPage, JsonPage]:
    day = DateRange(DAY, DAY, tenant.zone)
    return (
        await stores.calls.recording_page(tenant, day, 100),
        await stores.calls.transcription_page(tenant, day, 100),
    )


async def test_a_cached_page_is_served_again_until_its_list_changes(
    two_stores: tuple[Stores, Stores],
) -> None:
    server, _ = two_stores
    tenant = await server.tenant()
    await server.calls.add_recording(tenant, recording("1.1", "2026-03-10 09:00:00"))
    await server.calls.add_transcription(tenant, transcript("1.1", "2026-03-10 09:00:00"))
    record_page, transcription_page = await pages(server, tenant)
    assert await pages(server, tenant) == (record_page, transcription_page)
    again = await pages(server, tenant)
    assert again[0] is record_page and again[1] is transcription_page  # the cached objects
    # A new recording changes /record only; /transcription stays cached.
    await server.calls.add_recording(tenant, recording("1.2", "2026-03-10 10:00:00"))
    after = await pages(server, tenant)
    assert [row["uniqueid"] for row in rows(after[0])] == ["1.1", "1.2"]
    assert after[0].total == 2 and after[1] is transcription_page
    # A duplicate recording (kept as it was) changes nothing.
    assert not await server.calls.add_recording(tenant, recording("1.2", "2026-03-10 10:00:00"))
    assert (await pages(server, tenant))[0] is after[0]


async def test_rows_written_through_another_connection_change_the_page_at_once(
    two_stores: tuple[Stores, Stores],
) -> None:
    server, other = two_stores
    tenant = await server.tenant()
    elsewhere = await other.tenants.require(tenant.name)
    await server.calls.add_transcription(tenant, transcript("1.1", "2026-03-10 09:00:00"))
    record_before, transcription_before = await pages(server, tenant)
    assert record_before.body == b"[]" and transcription_before.total == 1
    await other.calls.add_recording(elsewhere, recording("1.1", "2026-03-10 09:00:00"))
    await other.calls.add_transcription(elsewhere, transcript("1.2", "2026-03-10 08:00:00"))
    record_after, transcription_after = await pages(server, tenant)
    assert [row["uniqueid"] for row in rows(record_after)] == ["1.1"]
    assert [row["uniqueid"] for row in rows(transcription_after)] == ["1.2", "1.1"]
    assert transcription_after.total == 2


async def test_a_re_run_that_changes_a_row_in_place_changes_the_page(
    two_stores: tuple[Stores, Stores],
) -> None:
    """A transcription re-run replaces its row (same call, same count, same largest id):
    only the revision tells the cache."""
    server, other = two_stores
    tenant = await server.tenant()
    elsewhere = await other.tenants.require(tenant.name)
    await server.calls.add_transcription(tenant, transcript("1.1", "2026-03-10 09:00:00"))
    _, before = await pages(server, tenant)
    await other.calls.add_transcription(elsewhere, transcript("1.1", "2026-03-10 09:00:00", "77"))
    _, after = await pages(server, tenant)
    assert [row["src"] for row in rows(before)] == ["101"]
    assert [row["src"] for row in rows(after)] == ["77"] and after.total == 1


async def test_a_transcription_worker_s_result_changes_the_page(
    two_stores: tuple[Stores, Stores],
) -> None:
    """The worker stores its result through the job queue (storage/jobs.py), its own
    transaction on its own engine."""
    server, other = two_stores
    tenant = await server.tenant()
    await server.calls.add_recording(tenant, recording("1.1", "2026-03-10 09:00:00"))
    _, before = await pages(server, tenant)
    jobs = JobStore(other.engine)
    assert await jobs.enqueue(tenant.id, "1.1")
    claimed = await jobs.claim("worker-1", lease=30, max_attempts=3)
    assert claimed is not None
    assert await jobs.complete(claimed, "tekst", "krótko") == DONE
    _, after = await pages(server, tenant)
    assert before.body == b"[]"
    assert [row["uniqueid"] for row in rows(after)] == ["1.1"]


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from cloudpbx.domain.records import TranscriptionRecord
    from cloudpbx.storage.calls import CallStore
    from cloudpbx.storage.database import create_engine
    from cloudpbx.storage.tenants import TenantStore

    async def main(url: str, name: str) -> None:
        engine = create_engine(url)
        tenant = await TenantStore(engine).require(name)
        moment = datetime(2026, 3, 10, 7, tzinfo=UTC)
        record = TranscriptionRecord("9.9", moment, "101", "102", "tekst", "s")
        await CallStore(engine).add_transcription(tenant, record)
        await engine.dispose()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_row_written_by_another_process_changes_the_page(database_url: str) -> None:
    async with open_stores(database_url) as server:
        tenant = await server.tenant()
        await server.calls.add_transcription(tenant, transcript("1.1", "2026-03-10 09:00:00"))
        _, before = await pages(server, tenant)
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, database_url, tenant.name
        )
        assert await writer.wait() == 0
        _, after = await pages(server, tenant)
        assert [row["uniqueid"] for row in rows(before)] == ["1.1"]
        assert [row["uniqueid"] for row in rows(after)] == ["9.9", "1.1"]
