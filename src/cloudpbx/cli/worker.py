"""`cloudpbx worker`, `cloudpbx transcribe`, `cloudpbx jobs`: the transcription queue.

Mounted on the main app by `register(app)` (cli/main.py). Self-contained (it imports
nothing from cli/main.py), so either module can be imported first.

`cloudpbx worker --processes N` starts N worker processes (multiprocessing, spawn; one
by default) and supervises them: a worker that dies is started again after a second (its
job is taken over by a worker once its lease runs out), SIGTERM/SIGINT stop them all
(each hands its current job back to the queue). A worker whose engine cannot run
(missing package or model) exits with code 2, and then the whole command stops with the
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.text import Text

from cloudpbx.cli.common import console, errors, run_on_database
from cloudpbx.domain.errors import BadRequest, NotFound
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.services.transcription import Outcome, wait_for_job, worker_name
from cloudpbx.settings import Settings, load_settings
from cloudpbx.storage.jobs import DONE, FAILED, SKIPPED, STATUSES, JobInfo
from cloudpbx.storage.tenants import Tenant

log = logging.getLogger(__name__)
T = TypeVar("T")

CONFIG_PROBLEM = 2
"""Exit code of a worker process whose engine cannot run: not restarted."""

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (also CLOUDPBX_CONFIG)", exists=True),
]
DataOption = Annotated[
    Path | None, typer.Option("--data", help="Data folder (SQLite file, recordings)")
]
DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: SQLite in --data)")
]


def register(app: typer.Typer) -> None:
    """Add `worker`, `transcribe` and `jobs` to the `cloudpbx` app."""
    app.command("worker")(worker)
    app.command("transcribe")(transcribe)
    app.command("jobs")(jobs)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def worker(
    processes: Annotated[
        int, typer.Option("--processes", "-n", min=1, help="Worker processes to run")
    ] = 1,
    once: Annotated[
        bool, typer.Option("--once", help="Exit when no job is due (cron, batch runs)")
    ] = False,
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Transcribe recordings: take jobs from the queue until stopped."""
    settings = load_settings(config, data_dir=data, database_url=database_url)
    _logging(settings.log_level)

    async def prepare(runtime: Runtime) -> None:
        return None

    run_on_database(settings, prepare)  # migrate once here, not in every process
    code = _supervise(settings, processes, once)
    if code == CONFIG_PROBLEM:
        errors.print("[red]error:[/red] the transcription engine cannot run (see the log above)")
    raise typer.Exit(1 if code else 0)


def _lower_priority(nice: int) -> None:
    """Transcription is batch work: let the API (niceness 0) go first on a shared CPU."""
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)


async def _work(settings: Settings, name: str, once: bool) -> int:
    """One worker until stopped (or, `once`, until no job is due); its exit code."""
    from cloudpbx.adapters.transcription import EngineFactory

    _lower_priority(settings.transcription_nice)
    runtime = build_runtime(settings)
    try:
        factory = runtime.transcribers
        if isinstance(factory, EngineFactory):
            problems = await asyncio.to_thread(factory.check)
            for problem in problems:
                log.error("transcription engine %s", problem)
            if problems:
                return CONFIG_PROBLEM
        job_worker = runtime.transcription_worker(name)
        task = asyncio.create_task(job_worker.run(until_empty=once))
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0
    finally:
        close = getattr(runtime.transcribers, "close", None)
        if close is not None:
            close()
        await runtime.engine.dispose()


def _process_main(settings_data: dict[str, Any], index: int, once: bool) -> None:
    """Entry of a worker process: run, then leave at once (os._exit) without waiting for a
    decoder thread whose job was already handed back."""
    settings = Settings.model_validate(settings_data)
    _logging(settings.log_level)
    code = 1
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(_work(settings, worker_name(f"w{index}"), once))
    except BaseException:
        log.exception("transcription worker %d crashed", index)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _supervise(settings: Settings, count: int, once: bool) -> int:
    context = multiprocessing.get_context("spawn")
    data = settings.model_dump()

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_process_main, args=(data, index, once), name=f"cloudpbx-worker-{index}"
        )
        process.start()
        log.info("transcription worker %d: process %s", index, process.pid)
        return process

    running = {index: start(index) for index in range(count)}
    restart_at: dict[int, float] = {}
    stopping_since: float | None = None
    signalled: set[int] = set()
    code = 0

    def stop(_signal: int, _frame: object) -> None:
        nonlocal stopping_since
        if stopping_since is None:
            stopping_since = time.monotonic()

    previous = {n: signal.signal(n, stop) for n in (signal.SIGTERM, signal.SIGINT)}
    try:
        while running or (restart_at and stopping_since is None):
            time.sleep(0.2)
            now = time.monotonic()
            for index, process in list(running.items()):
                if process.is_alive():
                    continue
                process.join()
                del running[index]
                if process.exitcode == CONFIG_PROBLEM:
                    code = CONFIG_PROBLEM
                    stop(0, None)
                elif stopping_since is None and not (once and process.exitcode == 0):
                    log.warning(
                        "transcription worker %d exited with %s; starting it again",
                        index,
                        process.exitcode,
                    )
                    restart_at[index] = now + 1.0
            if stopping_since is not None:
                # Checked on every round, so that a process started just before the
                # signal is stopped too; after 30 s the stragglers are killed.
                restart_at.clear()
                for process in running.values():
                    if process.pid is not None and process.pid not in signalled:
                        signalled.add(process.pid)
                        process.terminate()
                    elif now - stopping_since > 30:
                        process.kill()
                continue
            for index, when in list(restart_at.items()):
                if when <= now:
                    del restart_at[index]
                    running[index] = start(index)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return code


# -- transcribe ------------------------------------------------------------------------------


def transcribe(
    uniqueid: Annotated[str | None, typer.Argument(help="The call's uniqueid")] = None,
    pbx: Annotated[
        str | None, typer.Option("--pbx", help="The call's PBX (needed if several have it)")
    ] = None,
    queue_only: Annotated[
        bool, typer.Option("--queue", help="Only queue it for the workers; do not wait")
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait when a worker already has the job")
    ] = 600.0,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Queue every failed job again")
    ] = False,
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Transcribe one recorded call again (here and now, with the configured engine)."""
    if uniqueid is None and not retry_failed:
        errors.print("[red]error:[/red] name a call's uniqueid, or use --retry-failed")
        raise typer.Exit(2)
    settings = load_settings(config, data_dir=data, database_url=database_url)
    _logging(settings.log_level if settings.log_level != "info" else "warning")

    async def action(runtime: Runtime) -> int:
        assert runtime.transcription is not None
        jobs = runtime.transcription.jobs
        if retry_failed:
            console.print(f"queued {await jobs.requeue_failed()} failed job(s) again")
        if uniqueid is None:
            return 0
        tenant = await _call_tenant(runtime, uniqueid, pbx)
        job_id = await runtime.transcription.rerun(tenant, uniqueid)
        if queue_only:
            console.print(f"queued job {job_id}: {escape(tenant.name)} call {escape(uniqueid)}")
            return 0
        outcome: Outcome | None = await runtime.transcription_worker(worker_name("cli")).run_once(
            job_id
        )
        if outcome is None:
            console.print(f"a worker has job {job_id}; waiting for it")
            try:
                async with asyncio.timeout(wait):
                    await wait_for_job(jobs, job_id)
            except TimeoutError:
                errors.print(f"[red]error:[/red] job {job_id} still not finished after {wait}s")
                return 3
        info = await jobs.get(job_id)
        status = info.status if info is not None else FAILED
        if status == FAILED:
            reason = info.reason if info is not None else "job vanished"
            errors.print(f"[red]failed:[/red] {escape(reason or '')}")
            return 1
        if status not in (DONE, SKIPPED):
            console.print(f"job {job_id} is {status}: {escape(info.reason or '' if info else '')}")
            return 3
        found = await runtime.calls.get_transcription(tenant, uniqueid)
        if found is not None:
            console.print(f"[bold]{escape(uniqueid)}[/bold] ({escape(tenant.name)}): {status}")
            console.print(Text(found["content"] or "(no speech)"))
            console.print(Text(f"summary: {found['summary']}"))
        return 0

    code = run_on_database(settings, action)
    raise typer.Exit(code)


async def _call_tenant(runtime: Runtime, uniqueid: str, pbx: str | None) -> Tenant:
    assert runtime.transcription is not None
    if pbx is not None:
        tenant = await runtime.tenants.require(pbx)
        if await runtime.calls.get_recording(tenant, uniqueid) is None:
            raise NotFound(f"PBX {pbx} has no recording of call {uniqueid}", code="unknown_call")
        return tenant
    owners = await runtime.transcription.jobs.uniqueid_owners(uniqueid)
    if not owners:
        raise NotFound(f"no recording of call {uniqueid}", code="unknown_call")
    if len(owners) > 1:
        names = ", ".join(name for _id, name in owners)
        raise BadRequest(
            f"call {uniqueid} is on several PBXes ({names}): name one with --pbx", code="ambiguous"
        )
    return await runtime.tenants.require(owners[0][1])


# -- jobs ------------------------------------------------------------------------------------


def jobs(
    status: Annotated[
        str | None, typer.Option(help=f"Only jobs in this state: {', '.join(STATUSES)}")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most jobs listed")] = 50,
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """The transcription queue: jobs per state, and the latest jobs with their reasons."""
    settings = load_settings(config, data_dir=data, database_url=database_url)

    async def action(runtime: Runtime) -> tuple[dict[str, int], list[JobInfo]]:
        assert runtime.transcription is not None
        store = runtime.transcription.jobs
        return await store.counts(), await store.recent(status, limit)

    counts, rows = run_on_database(settings, action)
    console.print("  ".join(f"{name}: {counts[name]}" for name in STATUSES))
    # One line per job, tab-separated: whole ids and reasons, easy to grep and cut.
    for row in rows:
        status = row.status + (" (re-run)" if row.rerun else "")
        fields = [
            str(row.id),
            row.pbx,
            row.uniqueid,
            status,
            f"attempts={row.attempts}",
            f"{row.updated_at:%Y-%m-%d %H:%M:%S}Z",
            row.reason or "",
        ]
        print("\t".join(fields).rstrip())
