"""Transcription in the background: the job queue's producers and its workers.

`TranscriptionQueue` is what the rest of the server sees: `PbxIngest` tells it about
every stored recording (a job is queued unless the PBX's engine is `none`) and about
every transcript a backend supplied itself (a waiting job is then skipped: the simulator
writes its own transcripts, and so may a PBX with a speech service of its own);
`cloudpbx transcribe` asks it for re-runs.

`Worker` takes jobs one at a time (storage/jobs.py has the claim protocol), transcribes
the recording with the PBX's engine off the event loop, renews its lease while the
engine works, and records the outcome:

- success: the transcription and the job's `done` in one transaction (a job is never
  transcribed twice: a second worker can only get it when the first lost its lease, and
  then the first one's result is dropped);
- a failure the engine marks permanent (`transient = False`: unreadable audio, a missing
  model, a request the server refuses): `failed`, with the reason;
- any other failure: back to the queue with exponential backoff (`retry_delay`,
  doubling, at most `retry_max`, ±10 % jitter) until `max_attempts`, then `failed`;
- the worker dies mid-job: its lease runs out and another worker takes the job over
  (counted as an attempt, so a recording that kills every worker ends as `failed`);
- the worker is stopped mid-job: the job goes back to the queue at once, uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from cloudpbx.domain.records import RecordingInfo
from cloudpbx.ports.transcription import Transcript
from cloudpbx.storage.jobs import DONE, FAILED, QUEUED, SKIPPED, ClaimedJob, JobStore
from cloudpbx.storage.tenants import Tenant, validate_pbx_name

log = logging.getLogger(__name__)

SUPPLIED = "transcript supplied by the PBX"


class CallTranscriber(Protocol):
    """The TranscriptionEngine port, plus what a call can tell the engine: the file's
    format and the parties (src, dst) to label a two-channel recording's lines with."""

    async def transcribe(
        self, audio: Path, *, fmt: str = "", speakers: Sequence[str] = ()
    ) -> Transcript: ...


TranscriberFor = Callable[[str], CallTranscriber | None]
"""The transcriber of a PBX (by name); None when its transcription is off. May raise an
exception with `transient = False` when the configured engine cannot run."""


@dataclass(frozen=True, slots=True)
class WorkerPolicy:
    lease: float = 60.0
    max_attempts: int = 5
    retry_delay: float = 30.0
    retry_max: float = 3600.0
    poll_interval: float = 2.0

    def backoff(self, attempts: int) -> float:
        delay = min(self.retry_delay * 2 ** max(0, attempts - 1), self.retry_max)
        return float(delay * random.uniform(0.9, 1.1))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed job: `done`, `skipped`, `failed`, `queued` (retry),
    `lost` (another worker holds it now) or `released` (the worker stopped)."""

    job_id: int
    pbx: str
    uniqueid: str
    status: str
    reason: str | None = None


class TranscriptionQueue:
    """The producers' side of the queue."""

    def __init__(self, jobs: JobStore, enabled: Callable[[str], bool]) -> None:
        self.jobs = jobs
        self._enabled = enabled
        self._listeners: list[Callable[[], None]] = []

    def on_enqueue(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each new job (in-process workers wake at once)."""
        self._listeners.append(listener)

    async def recording_stored(self, tenant: Tenant, info: RecordingInfo) -> None:
        if not self._enabled(tenant.name):
            return
        if await self.jobs.enqueue(tenant.id, info.uniqueid):
            for listener in self._listeners:
                listener()

    async def transcript_supplied(self, tenant: Tenant, uniqueid: str) -> None:
        await self.jobs.supersede(tenant.id, uniqueid, SUPPLIED)

    async def rerun(self, tenant: Tenant, uniqueid: str) -> int:
        """Queue the call's transcription again (replacing the stored one); the job id."""
        job_id = await self.jobs.requeue(tenant.id, uniqueid)
        for listener in self._listeners:
            listener()
        return job_id


class _LeaseLost(Exception):
    pass


def worker_name(suffix: str = "") -> str:
    name = f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}:{suffix}" if suffix else name


class Worker:
    """Takes jobs until stopped; `run_once` does one."""

    def __init__(
        self,
        jobs: JobStore,
        transcriber_for: TranscriberFor,
        recordings_root: Path,
        policy: WorkerPolicy | None = None,
        name: str | None = None,
    ) -> None:
        self.jobs = jobs
        self.name = name or worker_name()
        self.policy = policy or WorkerPolicy()
        self._transcriber_for = transcriber_for
        self._root = recordings_root
        self._wake = asyncio.Event()
        self.processed = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event | None = None, *, until_empty: bool = False) -> None:
        """Process jobs until `stop` is set (or, with `until_empty`, none is due)."""
        stop = stop or asyncio.Event()
        log.info("transcription worker %s started", self.name)
        while not stop.is_set():
            self._wake.clear()
            try:
                outcome = await self.run_once()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("transcription worker %s: database: %s", self.name, exc)
                outcome = None
            except Exception:
                log.exception("transcription worker %s: unexpected error", self.name)
                outcome = None
            if outcome is not None:
                continue
            if until_empty:
                break
            # Idle: until a new job is announced here, the stop, or the next poll.
            waiters = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(stop.wait()),
            ]
            try:
                await asyncio.wait(
                    waiters, timeout=self.policy.poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
        log.info("transcription worker %s stopped", self.name)

    async def run_once(self, job_id: int | None = None) -> Outcome | None:
        """Claim one due job (job `job_id` only, if given) and see it through; None when
        there was none to claim."""
        claimed = await self.jobs.claim(
            self.name, self.policy.lease, self.policy.max_attempts, job_id
        )
        if claimed is None:
            return None
        outcome = await self._process(claimed)
        self.processed += 1
        level = logging.WARNING if outcome.status == FAILED else logging.INFO
        log.log(
            level,
            "transcription of %s on %s: %s%s",
            claimed.uniqueid,
            claimed.pbx,
            outcome.status,
            f" ({outcome.reason})" if outcome.reason else "",
        )
        return outcome

    async def _process(self, claimed: ClaimedJob) -> Outcome:
        def outcome(status: str, reason: str | None = None) -> Outcome:
            return Outcome(claimed.id, claimed.pbx, claimed.uniqueid, status, reason)

        try:
            if not claimed.rerun and await self.jobs.has_transcription(claimed):
                return outcome(SKIPPED if await self.jobs.skip(claimed, SUPPLIED) else "lost")
            transcriber = self._transcriber_for(claimed.pbx)
            if transcriber is None:
                reason = "transcription is off for this PBX"
                return outcome(SKIPPED if await self.jobs.skip(claimed, reason) else "lost", reason)
            path = self._path(claimed)
            result = await self._with_lease(
                claimed,
                transcriber.transcribe(
                    path, fmt=claimed.format, speakers=(claimed.src, claimed.dst)
                ),
            )
            status = await self.jobs.complete(claimed, result.content, result.summary)
            return outcome(status or "lost")
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.jobs.release(claimed))
            raise
        except _LeaseLost:
            return outcome("lost", "the lease ran out; another worker has the job")
        except Exception as exc:
            return await self._failed(claimed, exc)

    async def _failed(self, claimed: ClaimedJob, exc: Exception) -> Outcome:
        reason = str(exc) or type(exc).__name__
        transient = getattr(exc, "transient", True)
        if transient and not hasattr(exc, "transient"):
            log.warning("unexpected error transcribing %s", claimed.uniqueid, exc_info=exc)
        if not transient or claimed.attempts >= self.policy.max_attempts:
            if transient:
                reason = f"{reason} (gave up after {claimed.attempts} attempts)"
            status = FAILED if await self.jobs.fail(claimed, reason) else "lost"
        else:
            delay = self.policy.backoff(claimed.attempts)
            status = QUEUED if await self.jobs.retry(claimed, reason, delay) else "lost"
        return Outcome(claimed.id, claimed.pbx, claimed.uniqueid, status, reason)

    def _path(self, claimed: ClaimedJob) -> Path:
        if claimed.path is None:
            raise _Permanent("the call has no recording")
        root = (self._root / validate_pbx_name(claimed.pbx)).resolve()
        path = (root / claimed.path).resolve()
        if not path.is_relative_to(root):
            raise _Permanent(f"recording path {claimed.path!r} leads outside its folder")
        return path

    async def _with_lease(
        self, claimed: ClaimedJob, work: Coroutine[Any, Any, Transcript]
    ) -> Transcript:
        """Await `work` while renewing the lease; _LeaseLost if it is lost meanwhile."""
        task = asyncio.ensure_future(work)
        keeper = asyncio.create_task(self._keep_lease(claimed))
        try:
            await asyncio.wait({task, keeper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            keeper.cancel()
            raise
        if task.done():
            keeper.cancel()
            return task.result()
        task.cancel()
        raise _LeaseLost

    async def _keep_lease(self, claimed: ClaimedJob) -> None:
        """Renew the lease every third of it; returns when it could not be renewed."""
        while True:
            await asyncio.sleep(self.policy.lease / 3)
            try:
                if not await self.jobs.heartbeat(claimed, self.policy.lease):
                    return
            except (SQLAlchemyError, OSError) as exc:
                log.warning("lease of job %d not renewed: %s", claimed.id, exc)


class _Permanent(Exception):
    transient = False


async def wait_for_job(jobs: JobStore, job_id: int, interval: float = 0.5) -> str:
    """Poll until job `job_id` is finished (done, skipped or failed); its status. Bound it
    with `asyncio.timeout`."""
    while True:
        info = await jobs.get(job_id)
        status = info.status if info is not None else FAILED
        if status in (DONE, SKIPPED, FAILED):
            return status
        await asyncio.sleep(interval)
