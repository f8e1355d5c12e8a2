"""The transcription job queue, in the database (SQLite or PostgreSQL).

One row per recorded call (`transcription_job`, unique per PBX and uniqueid), so a
recording can never become two jobs. A worker claims a row with one atomic UPDATE:

    UPDATE transcription_job SET status='running', claim=<token>, locked_until=now+lease,
                                 attempts=attempts+1, ...
    WHERE id = (SELECT id ... WHERE <claimable> ORDER BY available_at, id LIMIT 1
                [FOR UPDATE SKIP LOCKED])          -- PostgreSQL: workers skip each other
      AND <claimable>                              -- re-checked on the row itself
    RETURNING ...

where <claimable> is "queued and due" or "running with its lease run out" (its worker
died). SQLite runs the statement under its single writer lock; PostgreSQL locks the row
and re-evaluates the condition, so two workers never both win a row. Every later write of
the attempt (heartbeat, result, retry, failure) is conditional on `claim` still being the
attempt's token and the row still running: a worker that lost its lease (it stalled
and another worker took the job over) cannot overwrite anything, and its result is
dropped. The result and the job's `done` are written in one transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloudpbx.storage import revisions
from cloudpbx.storage.tables import pbx, recording, transcription, transcription_job
from cloudpbx.storage.tenants import utcnow

QUEUED, RUNNING, DONE, FAILED, SKIPPED = "queued", "running", "done", "failed", "skipped"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, SKIPPED)

job = transcription_job


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """One attempt at a job, as its worker holds it, with what it needs of the recording."""

    id: int
    pbx_id: int
    pbx: str
    uniqueid: str
    attempts: int
    rerun: bool
    claim: str
    # The recording row (None when the call has no recording any more).
    path: str | None
    format: str
    src: str
    dst: str
    started_at: datetime | None
    calldate: str


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as the CLI lists it."""

    id: int
    pbx: str
    uniqueid: str
    status: str
    attempts: int
    rerun: bool
    reason: str | None
    worker: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class JobStore:
    """Queue operations; every method is one short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    # -- producers -------------------------------------------------------------------------

    async def enqueue(self, pbx_id: int, uniqueid: str) -> bool:
        """Queue the call's transcription; False when the call already has a job."""
        now = utcnow()
        statement = (
            self._insert(job)
            .values(
                pbx_id=pbx_id,
                uniqueid=uniqueid,
                status=QUEUED,
                rerun=False,
                attempts=0,
                available_at=now,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["pbx_id", "uniqueid"])
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount == 1)

    async def requeue(self, pbx_id: int, uniqueid: str) -> int:
        """Queue the call again as a re-run (its result replaces the stored transcription),
        whatever the job's state; an attempt running now loses its claim. The job's id."""
        now = utcnow()
        values = {
            "status": QUEUED,
            "rerun": True,
            "attempts": 0,
            "available_at": now,
            "locked_until": None,
            "claim": None,
            "worker": None,
            "reason": None,
            "updated_at": now,
            "finished_at": None,
        }
        insert = self._insert(job).values(
            pbx_id=pbx_id, uniqueid=uniqueid, created_at=now, **values
        )
        statement = insert.on_conflict_do_update(
            index_elements=["pbx_id", "uniqueid"], set_=values
        ).returning(job.c.id)
        async with self._engine.begin() as conn:
            return int((await conn.execute(statement)).scalar_one())

    async def requeue_failed(self) -> int:
        """Give every failed job a fresh set of attempts; how many there were."""
        now = utcnow()
        statement = (
            update(job)
            .where(job.c.status == FAILED)
            .values(status=QUEUED, attempts=0, available_at=now, updated_at=now, finished_at=None)
        )
        async with self._engine.begin() as conn:
            return int((await conn.execute(statement)).rowcount)

    async def supersede(self, pbx_id: int, uniqueid: str, reason: str) -> bool:
        """A transcript arrived from elsewhere (the PBX backend): a job still waiting for a
        worker is not needed any more. Re-runs asked for by hand are left alone."""
        now = utcnow()
        statement = (
            update(job)
            .where(
                job.c.pbx_id == pbx_id,
                job.c.uniqueid == uniqueid,
                job.c.status == QUEUED,
                job.c.rerun.is_(False),
            )
            .values(status=SKIPPED, reason=reason, updated_at=now, finished_at=now)
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(statement)).rowcount)

    # -- workers ---------------------------------------------------------------------------

    async def claim(
        self, worker: str, lease: float, max_attempts: int, job_id: int | None = None
    ) -> ClaimedJob | None:
        """Take the next due job (or job `job_id` if it is claimable) for `lease` seconds.

        A job whose worker was lost `max_attempts` times is failed here, not handed out
        again: a recording that kills its worker (out of memory, a crashing library)
        must not take the whole pool down in turn.
        """
        while True:
            now = utcnow()
            claimable = self._claimable(now)
            candidate = select(job.c.id).where(claimable)
            if job_id is not None:
                candidate = candidate.where(job.c.id == job_id)
            candidate = candidate.order_by(job.c.available_at, job.c.id).limit(1)
            if self._dialect == "postgresql":
                candidate = candidate.with_for_update(skip_locked=True)
            token = secrets.token_hex(16)
            statement = (
                update(job)
                .where(job.c.id == candidate.scalar_subquery(), claimable)
                .values(
                    status=RUNNING,
                    claim=token,
                    worker=worker[:64],
                    locked_until=now + timedelta(seconds=lease),
                    attempts=job.c.attempts + 1,
                    updated_at=now,
                )
                .returning(job.c.id, job.c.attempts, job.c.rerun)
            )
            async with self._engine.begin() as conn:
                row = (await conn.execute(statement)).first()
                if row is None:
                    return None
                if row.attempts > max_attempts:
                    await self._finish(
                        conn,
                        row.id,
                        token,
                        FAILED,
                        f"its worker was lost {row.attempts - 1} times (killed or crashed)",
                    )
                    if job_id is not None:
                        return None
                    continue
                return await self._claimed(conn, row.id, row.attempts, bool(row.rerun), token)

    def _claimable(self, now: datetime) -> ColumnElement[bool]:
        return or_(
            and_(job.c.status == QUEUED, job.c.available_at <= now),
            and_(job.c.status == RUNNING, job.c.locked_until < now),
        )

    async def _claimed(
        self, conn: AsyncConnection, job_id: int, attempts: int, rerun: bool, token: str
    ) -> ClaimedJob:
        query = (
            select(
                job.c.pbx_id,
                job.c.uniqueid,
                pbx.c.name,
                recording.c.path,
                recording.c.format,
                recording.c.src,
                recording.c.dst,
                recording.c.started_at,
                recording.c.calldate,
            )
            .select_from(
                job.join(pbx, pbx.c.id == job.c.pbx_id).outerjoin(
                    recording,
                    and_(
                        recording.c.pbx_id == job.c.pbx_id,
                        recording.c.uniqueid == job.c.uniqueid,
                    ),
                )
            )
            .where(job.c.id == job_id)
        )
        row = (await conn.execute(query)).one()
        return ClaimedJob(
            id=job_id,
            pbx_id=row.pbx_id,
            pbx=row.name,
            uniqueid=row.uniqueid,
            attempts=attempts,
            rerun=rerun,
            claim=token,
            path=row.path,
            format=row.format or "",
            src=row.src or "",
            dst=row.dst or "",
            started_at=row.started_at,
            calldate=row.calldate or "",
        )

    async def heartbeat(self, claimed: ClaimedJob, lease: float) -> bool:
        """Extend the lease; False when the attempt lost its claim (do not write results)."""
        now = utcnow()
        statement = (
            update(job)
            .where(*self._held(claimed))
            .values(locked_until=now + timedelta(seconds=lease), updated_at=now)
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(statement)).rowcount)

    async def has_transcription(self, claimed: ClaimedJob) -> bool:
        query = select(transcription.c.id).where(
            transcription.c.pbx_id == claimed.pbx_id,
            transcription.c.uniqueid == claimed.uniqueid,
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query.limit(1))).first() is not None

    async def complete(self, claimed: ClaimedJob, content: str, summary: str) -> str | None:
        """Store the transcription and finish the job, in one transaction.

        Returns the job's final status (`done`, or `skipped` when a transcript from the
        PBX got there first and this was no re-run), or None when the attempt had lost
        its claim: then nothing is written.
        """
        now = utcnow()
        async with self._engine.begin() as conn:
            if not await self._finish(conn, claimed.id, claimed.claim, DONE, None):
                return None
            if claimed.started_at is None:
                raise ValueError(f"job {claimed.id} has no recording row")
            values = {
                "pbx_id": claimed.pbx_id,
                "uniqueid": claimed.uniqueid,
                "started_at": claimed.started_at,
                "calldate": claimed.calldate,
                "src": claimed.src,
                "dst": claimed.dst,
                "content": content,
                "summary": summary,
                "finished_at": now,
            }
            statement = self._insert(transcription).values(**values)
            if claimed.rerun:
                statement = statement.on_conflict_do_update(
                    index_elements=["pbx_id", "uniqueid"],
                    set_={k: statement.excluded[k] for k in values if k != "pbx_id"},
                )
            else:
                statement = statement.on_conflict_do_nothing(index_elements=["pbx_id", "uniqueid"])
            if (await conn.execute(statement)).rowcount == 1:
                await revisions.bump(conn, "transcription", claimed.pbx_id)
                return DONE
            await conn.execute(
                update(job)
                .where(job.c.id == claimed.id)
                .values(status=SKIPPED, reason="transcript supplied by the PBX")
            )
            return SKIPPED

    async def skip(self, claimed: ClaimedJob, reason: str) -> bool:
        async with self._engine.begin() as conn:
            return await self._finish(conn, claimed.id, claimed.claim, SKIPPED, reason)

    async def fail(self, claimed: ClaimedJob, reason: str) -> bool:
        async with self._engine.begin() as conn:
            return await self._finish(conn, claimed.id, claimed.claim, FAILED, reason)

    async def retry(self, claimed: ClaimedJob, reason: str, delay: float) -> bool:
        """Back to the queue, due in `delay` seconds."""
        now = utcnow()
        statement = (
            update(job)
            .where(*self._held(claimed))
            .values(
                status=QUEUED,
                available_at=now + timedelta(seconds=delay),
                locked_until=None,
                claim=None,
                reason=reason,
                updated_at=now,
            )
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(statement)).rowcount)

    async def release(self, claimed: ClaimedJob) -> bool:
        """Hand the job back untouched (the worker is shutting down): the attempt does not
        count, and the job is due at once."""
        now = utcnow()
        statement = (
            update(job)
            .where(*self._held(claimed))
            .values(
                status=QUEUED,
                attempts=job.c.attempts - 1,
                available_at=now,
                locked_until=None,
                claim=None,
                updated_at=now,
            )
        )
        async with self._engine.begin() as conn:
            return bool((await conn.execute(statement)).rowcount)

    def _held(self, claimed: ClaimedJob) -> tuple[ColumnElement[bool], ...]:
        return (job.c.id == claimed.id, job.c.claim == claimed.claim, job.c.status == RUNNING)

    async def _finish(
        self, conn: AsyncConnection, job_id: int, token: str, status: str, reason: str | None
    ) -> bool:
        now = utcnow()
        statement = (
            update(job)
            .where(job.c.id == job_id, job.c.claim == token, job.c.status == RUNNING)
            .values(
                status=status, reason=reason, locked_until=None, updated_at=now, finished_at=now
            )
        )
        return bool((await conn.execute(statement)).rowcount)

    # -- reading ---------------------------------------------------------------------------

    async def get(self, job_id: int) -> JobInfo | None:
        rows = await self._infos(job.c.id == job_id, limit=1)
        return rows[0] if rows else None

    async def find(self, pbx_id: int, uniqueid: str) -> JobInfo | None:
        rows = await self._infos(job.c.pbx_id == pbx_id, job.c.uniqueid == uniqueid, limit=1)
        return rows[0] if rows else None

    async def recent(self, status: str | None = None, limit: int = 100) -> list[JobInfo]:
        """Most recently changed first."""
        where = () if status is None else (job.c.status == status,)
        return await self._infos(*where, limit=limit)

    async def counts(self) -> dict[str, int]:
        query = select(job.c.status, func.count()).group_by(job.c.status)
        async with self._engine.connect() as conn:
            found = {row[0]: int(row[1]) for row in await conn.execute(query)}
        return {status: found.get(status, 0) for status in STATUSES}

    async def backlog(self) -> dict[str, int]:
        """Queued and running jobs only: the status index answers it without reading the
        finished jobs, which grow with every recorded call (`counts` reads them all)."""
        query = (
            select(job.c.status, func.count())
            .where(job.c.status.in_((QUEUED, RUNNING)))
            .group_by(job.c.status)
        )
        async with self._engine.connect() as conn:
            found = {row[0]: int(row[1]) for row in await conn.execute(query)}
        return {status: found.get(status, 0) for status in (QUEUED, RUNNING)}

    async def _infos(self, *where: ColumnElement[bool], limit: int) -> list[JobInfo]:
        query = (
            select(job, pbx.c.name.label("pbx_name"))
            .select_from(job.join(pbx, pbx.c.id == job.c.pbx_id))
            .where(*where)
            .order_by(job.c.updated_at.desc(), job.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            JobInfo(
                id=row.id,
                pbx=row.pbx_name,
                uniqueid=row.uniqueid,
                status=row.status,
                attempts=row.attempts,
                rerun=bool(row.rerun),
                reason=row.reason,
                worker=row.worker,
                created_at=row.created_at,
                updated_at=row.updated_at,
                finished_at=row.finished_at,
            )
            for row in rows
        ]

    async def uniqueid_owners(self, uniqueid: str) -> Sequence[tuple[int, str]]:
        """(pbx id, PBX name) of every PBX with a recording of call `uniqueid`."""
        query = (
            select(pbx.c.id, pbx.c.name)
            .select_from(recording.join(pbx, pbx.c.id == recording.c.pbx_id))
            .where(recording.c.uniqueid == uniqueid)
            .order_by(pbx.c.name)
        )
        async with self._engine.connect() as conn:
            return [(row.id, row.name) for row in await conn.execute(query)]

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)
