"""The job queue on SQLite and PostgreSQL: atomic claims, leases, retries, outcomes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from cloudpbx.domain.records import RecordingInfo, TranscriptionRecord
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.jobs import DONE, FAILED, QUEUED, RUNNING, SKIPPED, JobStore
from cloudpbx.storage.tables import transcription, transcription_job
from cloudpbx.storage.tenants import Tenant, utcnow
from tests.test_storage_support import Stores, at, open_stores


@pytest.fixture
async def queue_url(database_url: str) -> AsyncIterator[str]:
    """A database of this test's own: claims take any due job, so nothing else may be
    queued there (the session's PostgreSQL database is shared by many tests)."""
    if database_url.startswith("sqlite"):
        yield database_url
        return
    url = make_url(database_url)
    name = f"{url.database}_jobs_{secrets.token_hex(3)}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.fixture
async def stores(queue_url: str) -> AsyncIterator[Stores]:
    async with open_stores(queue_url) as opened:
        yield opened


async def recorded(stores: Stores, tenant: Tenant, uniqueid: str) -> None:
    info = RecordingInfo(
        uniqueid, at("2025-03-04 10:00:00"), "101", "48500100200", "wav", f"{uniqueid}.wav", 44
    )
    await stores.calls.add_recording(tenant, info)


async def transcriptions(stores: Stores, tenant: Tenant, uniqueid: str) -> list[str]:
    query = select(transcription.c.content).where(
        transcription.c.pbx_id == tenant.id, transcription.c.uniqueid == uniqueid
    )
    async with stores.engine.connect() as conn:
        return [row.content for row in await conn.execute(query)]


async def test_one_job_per_call_and_what_a_claim_carries(stores: Stores) -> None:
    jobs = JobStore(stores.engine)
    tenant = await stores.tenant()
    await recorded(stores, tenant, "1.1")
    assert await jobs.enqueue(tenant.id, "1.1")
    assert not await jobs.enqueue(tenant.id, "1.1")
    assert (await jobs.counts())[QUEUED] == 1

    claimed = await jobs.claim("w1", lease=30, max_attempts=3)
    assert claimed is not None
    assert (claimed.pbx, claimed.uniqueid, claimed.attempts, claimed.rerun) == (
        tenant.name,
        "1.1",
        1,
        False,
    )
    assert (claimed.path, claimed.format, claimed.src, claimed.dst) == (
        "1.1.wav",
        "wav",
        "101",
        "48500100200",
    )
    assert claimed.calldate == "2025-03-04 11:00:00"  # Warsaw time, as the API shows it
    assert await jobs.claim("w2", lease=30, max_attempts=3) is None  # nothing else is due
    info = await jobs.find(tenant.id, "1.1")
    assert info is not None and info.status == RUNNING and info.worker == "w1"

    assert await jobs.complete(claimed, "[00:01] 101: hello", "hello") == DONE
    assert await transcriptions(stores, tenant, "1.1") == ["[00:01] 101: hello"]
    info = await jobs.find(tenant.id, "1.1")
    assert info is not None and info.status == DONE and info.finished_at is not None


async def test_concurrent_workers_never_share_a_job(queue_url: str, stores: Stores) -> None:
    """Six workers, each on its own engine (own connections), drain twenty jobs."""
    tenant = await stores.tenant()
    jobs = JobStore(stores.engine)
    for n in range(20):
        await recorded(stores, tenant, f"2.{n}")
        await jobs.enqueue(tenant.id, f"2.{n}")

    async def drain(name: str) -> list[int]:
        engine = create_engine(queue_url)
        store = JobStore(engine)
        taken = []
        try:
            while (claimed := await store.claim(name, lease=30, max_attempts=3)) is not None:
                taken.append(claimed.id)
                await asyncio.sleep(0)
                assert await store.complete(claimed, f"by {name}", "") == DONE
        finally:
            await engine.dispose()
        return taken

    results = await asyncio.gather(*(drain(f"w{i}") for i in range(6)))
    everything = [job_id for taken in results for job_id in taken]
    assert len(everything) == 20 and len(set(everything)) == 20
    assert (await jobs.counts())[DONE] == 20
    async with stores.engine.connect() as conn:
        rows = await conn.execute(
            select(func.count())
            .select_from(transcription)
            .where(transcription.c.pbx_id == tenant.id)
        )
        assert rows.scalar_one() == 20


async def test_racing_for_one_job_has_one_winner(queue_url: str, stores: Stores) -> None:
    tenant = await stores.tenant()
    jobs = JobStore(stores.engine)
    await recorded(stores, tenant, "3.1")
    await jobs.enqueue(tenant.id, "3.1")
    job_id = (await jobs.find(tenant.id, "3.1")).id  # type: ignore[union-attr]
    engines = [create_engine(queue_url) for _ in range(5)]
    try:
        won = await asyncio.gather(
            *(JobStore(e).claim(f"w{i}", 30, 3, job_id) for i, e in enumerate(engines))
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(claimed is not None for claimed in won) == 1


async def test_an_expired_lease_moves_the_job_and_fences_the_old_worker(stores: Stores) -> None:
    jobs = JobStore(stores.engine)
    tenant = await stores.tenant()
    await recorded(stores, tenant, "4.1")
    await jobs.enqueue(tenant.id, "4.1")
    first = await jobs.claim("w1", lease=0.2, max_attempts=3)
    assert first is not None
    assert await jobs.claim("w2", lease=30, max_attempts=3) is None  # still leased
    assert await jobs.heartbeat(first, lease=0.2)  # renewing works while it holds it
    await asyncio.sleep(0.3)
    second = await jobs.claim("w2", lease=30, max_attempts=3)
    assert second is not None and second.id == first.id and second.attempts == 2
    # The first worker comes back from its stall: it cannot renew, finish or fail the job.
    assert not await jobs.heartbeat(first, lease=30)
    assert await jobs.complete(first, "stale", "") is None
    assert not await jobs.fail(first, "stale")
    assert not await jobs.retry(first, "stale", 1)
    assert await transcriptions(stores, tenant, "4.1") == []
    assert await jobs.complete(second, "fresh", "") == DONE
    assert await transcriptions(stores, tenant, "4.1") == ["fresh"]


async def test_a_job_that_keeps_killing_workers_fails(stores: Stores) -> None:
    jobs = JobStore(stores.engine)
    tenant = await stores.tenant()
    await recorded(stores, tenant, "5.1")
    await jobs.enqueue(tenant.id, "5.1")
    for _ in range(2):
        assert await jobs.claim("w", lease=0.05, max_attempts=2) is not None
        await asyncio.sleep(0.1)
    assert await jobs.claim("w", lease=0.05, max_attempts=2) is None
    info = await jobs.find(tenant.id, "5.1")
    assert info is not None and info.status == FAILED
    assert info.reason is not None and "lost 2 times" in info.reason


async def test_retry_waits_and_failures_keep_their_reason(stores: Stores) -> None:
    jobs = JobStore(stores.engine)
    tenant = await stores.tenant()
    await recorded(stores, tenant, "6.1")
    await jobs.enqueue(tenant.id, "6.1")
    claimed = await jobs.claim("w", lease=30, max_attempts=5)
    assert claimed is not None
    assert await jobs.retry(claimed, "server answered 503", delay=60)
    assert await jobs.claim("w", lease=30, max_attempts=5) is None  # not due for a minute
    info = await jobs.find(tenant.id, "6.1")
    assert info is not None and (info.status, info.reason) == (QUEUED, "server answered 503")
    async with stores.engine.begin() as conn:  # a minute later
        await conn.execute(
            update(transcription_job)
            .where(transcription_job.c.id == claimed.id)
            .values(available_at=utcnow() - timedelta(seconds=1))
        )
    again = await jobs.claim("w", lease=30, max_attempts=5)
    assert again is not None and again.attempts == 2
    assert await jobs.fail(again, "unreadable audio")
    info = await jobs.find(tenant.id, "6.1")
    assert info is not None and (info.status, info.reason) == (FAILED, "unreadable audio")
    assert [i.uniqueid for i in await jobs.recent(FAILED)] == ["6.1"]

    assert await jobs.requeue_failed() == 1
    retried = await jobs.claim("w", lease=30, max_attempts=5)
    assert retried is not None and retried.attempts == 1


async def test_release_hands_the_job_back_uncounted(stores: Stores) -> None:
    jobs = JobStore(stores.engine)
    tenant = await stores.tenant()
    await recorded(stores, tenant, "7.1")
    await jobs.enqueue(tenant.id, "7.1")
    claimed = await jobs.claim("w", lease=30, max_attempts=5)
    assert claimed is not None and await jobs.release(claimed)
    again = await jobs.claim("w", lease=30, max_attempts=5)
    assert again is not None and again.attempts == 1


async def test_backend_transcripts_win_unless_rerun(stores: Stores) -> None:
    jobs = JobStore(stores.engine)
    tenant = await stores.tenant()
    supplied = TranscriptionRecord("8.1", at("2025-03-04 10:00:00"), "101", "102", "from PBX", "s")
    for uniqueid in ("8.1", "8.2"):
        await recorded(stores, tenant, uniqueid)
        await jobs.enqueue(tenant.id, uniqueid)

    # Queued: superseded at once.
    await stores.calls.add_transcription(tenant, supplied)
    assert await jobs.supersede(tenant.id, "8.1", "transcript supplied by the PBX")
    assert (await jobs.find(tenant.id, "8.1")).status == SKIPPED  # type: ignore[union-attr]

    # Running: the worker's result does not overwrite the PBX's.
    claimed = await jobs.claim("w", lease=30, max_attempts=5)
    assert claimed is not None and claimed.uniqueid == "8.2"
    assert not await jobs.supersede(tenant.id, "8.2", "x")
    await stores.calls.add_transcription(
        tenant, TranscriptionRecord("8.2", at("2025-03-04 10:00:00"), "101", "102", "PBX", "s")
    )
    assert await jobs.has_transcription(claimed)
    assert await jobs.complete(claimed, "engine", "") == SKIPPED
    assert await transcriptions(stores, tenant, "8.2") == ["PBX"]

    # A re-run replaces it, and is not superseded.
    job_id = await jobs.requeue(tenant.id, "8.1")
    assert not await jobs.supersede(tenant.id, "8.1", "x")
    rerun = await jobs.claim("w", lease=30, max_attempts=5, job_id=job_id)
    assert rerun is not None and rerun.rerun and rerun.attempts == 1
    assert await jobs.complete(rerun, "engine again", "new") == DONE
    assert await transcriptions(stores, tenant, "8.1") == ["engine again"]


async def test_requeue_takes_the_job_from_a_running_worker(stores: Stores) -> None:
    jobs = JobStore(stores.engine)
    tenant = await stores.tenant()
    await recorded(stores, tenant, "9.1")
    await jobs.enqueue(tenant.id, "9.1")
    running = await jobs.claim("w1", lease=30, max_attempts=5)
    assert running is not None
    await jobs.requeue(tenant.id, "9.1")
    assert await jobs.complete(running, "old", "") is None
    fresh = await jobs.claim("w2", lease=30, max_attempts=5)
    assert fresh is not None and fresh.rerun
    assert await jobs.complete(fresh, "new", "") == DONE
    assert await transcriptions(stores, tenant, "9.1") == ["new"]


async def test_a_job_without_a_recording_row_says_so(stores: Stores) -> None:
    jobs = JobStore(stores.engine)
    tenant = await stores.tenant()
    job_id = await jobs.requeue(tenant.id, "10.1")
    claimed = await jobs.claim("w", lease=30, max_attempts=5, job_id=job_id)
    assert claimed is not None and claimed.path is None and claimed.started_at is None
    assert await jobs.uniqueid_owners("10.1") == []
