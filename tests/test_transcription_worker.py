"""Workers end to end with the OpenAI-compatible engine on a fake server: recordings in,
jobs, retries, failures, backend transcripts, `cloudpbx transcribe`, and a worker process
killed mid-job (`cloudpbx worker --processes 2`)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cloudpbx.domain.records import RecordingInfo, TranscriptionRecord
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.settings import Settings
from cloudpbx.storage.jobs import DONE, FAILED, QUEUED, RUNNING, SKIPPED, JobInfo
from cloudpbx.storage.tables import transcription, transcription_job
from tests.fakes.openai import FakeOpenAI, Step
from tests.live import make_settings, running
from tests.test_transcription_openai import STEREO_CALL

PBX = "MojaCentrala"
CALL = "1795838273.7"
STARTED = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
EXPECTED = "[00:00] 101: tone 440 hertz\n[00:02] 48500100200: tone 880 hertz"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings_for(tmp_path: Path, fake: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "transcription_engine": "openai",
        "openai_url": fake.url,
        "summariser": "openai",
        "transcription_workers": 1,
        "transcription_retry_delay": 0.05,
        "transcription_poll_interval": 0.1,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


async def deliver(runtime: Runtime, uniqueid: str = CALL, audio: bytes = STEREO_CALL) -> None:
    """What a PBX backend does when a call's recording is complete."""
    folder = runtime.ingest.recordings_dir(PBX)
    (folder / f"{uniqueid}.wav").write_bytes(audio)
    info = RecordingInfo(uniqueid, STARTED, "101", "48500100200", "wav", f"{uniqueid}.wav", 1)
    await runtime.ingest.recording(PBX, info)


async def job_of(runtime: Runtime, uniqueid: str = CALL) -> JobInfo:
    assert runtime.transcription is not None
    tenant = await runtime.tenants.require(PBX)
    info = await runtime.transcription.jobs.find(tenant.id, uniqueid)
    assert info is not None
    return info


async def settled(runtime: Runtime, uniqueid: str = CALL) -> JobInfo:
    """The job once finished (done, failed or skipped), within 15 s."""
    async with asyncio.timeout(15):
        while True:
            info = await job_of(runtime, uniqueid)
            if info.status in (DONE, FAILED, SKIPPED):
                return info
            await asyncio.sleep(0.05)


async def with_pbx(runtime: Runtime) -> None:
    await runtime.tenants.create(PBX, "Europe/Warsaw")
    await runtime.tenants.create_key(PBX, "tests", "transcription-test-key-000000000001")


KEY = "transcription-test-key-000000000001"


async def test_a_recording_becomes_a_transcription(tmp_path: Path, fake: FakeOpenAI) -> None:
    async with running(settings_for(tmp_path, fake), prepare=with_pbx) as live:
        async with live.client(KEY) as client:
            await deliver(live.runtime)
            info = await settled(live.runtime)
            assert (info.status, info.attempts, info.reason) == (DONE, 1, None)
            listed = (await client.get("/transcription?datestart=2026-11-27")).json()
            assert listed == [
                {
                    "uniqueid": CALL,
                    "calldate": "2026-11-27 10:30:00",
                    "src": "101",
                    "dst": "48500100200",
                }
            ]
            detail = (await client.get(f"/transcription/{CALL}")).json()
            assert detail == {"uniqueid": CALL, "content": EXPECTED, "summary": fake.summary}
        # Delivered again (a PBX re-announcing the file): no second job, no second run.
        await deliver(live.runtime)
        await asyncio.sleep(0.3)
        assert len(fake.transcriptions) == 2 and len(fake.chats) == 1


async def test_transient_failures_are_retried_with_backoff(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    fake.script.extend([Step(503), Step(502)])
    async with running(settings_for(tmp_path, fake), prepare=with_pbx) as live:
        await deliver(live.runtime)
        info = await settled(live.runtime)
        assert (info.status, info.attempts) == (DONE, 3)
        assert len(fake.transcriptions) == 4  # two refused, then both channels


async def test_permanent_failures_are_recorded_and_not_listed(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    fake.script.extend([Step(400, "Audio file is corrupted"), Step(400, "Audio file is corrupted")])
    settings = settings_for(tmp_path, fake, transcription_max_attempts=2)
    async with running(settings, prepare=with_pbx) as live:
        await deliver(live.runtime)
        info = await settled(live.runtime)
        assert (info.status, info.attempts) == (FAILED, 1)
        assert info.reason is not None and "Audio file is corrupted" in info.reason
        # Transient until the attempts run out.
        fake.script.extend([Step(503, "overloaded")] * 2)
        await deliver(live.runtime, "1795838273.8")
        info = await settled(live.runtime, "1795838273.8")
        assert (info.status, info.attempts) == (FAILED, 2)
        assert (
            info.reason
            == "the transcription server answered 503: overloaded (gave up after 2 attempts)"
        )
        # A missing file fails at once.
        info_row = RecordingInfo("1795838273.9", STARTED, "101", "102", "wav", "gone.wav", 1)
        await live.runtime.ingest.recording(PBX, info_row)
        info = await settled(live.runtime, "1795838273.9")
        assert info.status == FAILED and "does not exist" in (info.reason or "")
        async with live.client(KEY) as client:
            assert (await client.get("/transcription?datestart=2026-11-27")).json() == []
            assert (await client.get(f"/transcription/{CALL}")).status_code == 404


async def test_a_job_survives_a_restart_of_the_server(tmp_path: Path, fake: FakeOpenAI) -> None:
    """Stopped mid-job, the in-process worker hands the job back (the attempt does not
    count); the next start of the server finishes it."""
    fake.script.append(Step(hold=True))
    settings = settings_for(tmp_path, fake)
    async with running(settings, prepare=with_pbx) as live:
        await deliver(live.runtime)
        async with asyncio.timeout(15):
            await fake.held.wait()
    # `running` has stopped the server; its database is still there.
    runtime = build_runtime(settings)
    try:
        info = await job_of(runtime)
        assert (info.status, info.attempts) == (QUEUED, 0)
    finally:
        await runtime.engine.dispose()
    fake.release.set()
    async with running(settings) as live:
        info = await settled(live.runtime)
        assert (info.status, info.attempts) == (DONE, 1)
        tenant = await live.runtime.tenants.require(PBX)
        found = await live.runtime.calls.get_transcription(tenant, CALL)
        assert found is not None and found["content"] == EXPECTED


async def test_a_backend_transcript_needs_no_job(tmp_path: Path, fake: FakeOpenAI) -> None:
    """The simulator (or a PBX with its own speech service) writes the transcript itself."""
    async with running(
        settings_for(tmp_path, fake, transcription_workers=0), prepare=with_pbx
    ) as live:
        await deliver(live.runtime)
        await live.runtime.ingest.transcription(
            PBX,
            TranscriptionRecord(
                CALL, STARTED, "101", "48500100200", "[00:01] Anna: Dzień dobry", "s"
            ),
        )
        info = await job_of(live.runtime)
        assert (info.status, info.reason) == (SKIPPED, "transcript supplied by the PBX")
    assert fake.transcriptions == []


async def test_engine_none_queues_nothing(tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = settings_for(tmp_path, fake, transcription_engines={PBX: "none"})
    async with running(settings, prepare=with_pbx) as live:
        await deliver(live.runtime)
        assert live.runtime.transcription is not None
        assert sum((await live.runtime.transcription.jobs.counts()).values()) == 0


def test_unknown_engine_names_stop_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use one of"):
        build_runtime(make_settings(tmp_path, transcription_engines={PBX: "whisperx"}))


# -- processes -------------------------------------------------------------------------------


def cli_env(tmp_path: Path, fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPBX_")}
    env.update(
        CLOUDPBX_DATA_DIR=str(tmp_path),
        CLOUDPBX_TRANSCRIPTION_ENGINE="openai",
        CLOUDPBX_OPENAI_URL=fake.url,
        CLOUDPBX_SUMMARISER="extractive",
        CLOUDPBX_TRANSCRIPTION_LEASE="1",
        CLOUDPBX_TRANSCRIPTION_POLL_INTERVAL="0.1",
        CLOUDPBX_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


CLI = [sys.executable, "-c", "from cloudpbx.cli.main import app; app()"]


async def prepared(tmp_path: Path, *calls: str) -> None:
    """A database in `tmp_path` with the PBX and the calls' recordings, queued."""
    runtime = build_runtime(make_settings(tmp_path))
    try:
        await runtime.migrate()
        await with_pbx(runtime)
        for uniqueid in calls:
            await deliver(runtime, uniqueid)
    finally:
        await runtime.engine.dispose()


async def rows(tmp_path: Path) -> tuple[list[Any], int]:
    runtime = build_runtime(make_settings(tmp_path))
    try:
        async with runtime.engine.connect() as conn:
            jobs = (await conn.execute(select(transcription_job))).all()
            count = await conn.execute(select(func.count()).select_from(transcription))
            return list(jobs), int(count.scalar_one())
    finally:
        await runtime.engine.dispose()


async def test_transcribe_cli_reruns_one_call(tmp_path: Path, fake: FakeOpenAI) -> None:
    await prepared(tmp_path, CALL)
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "transcribe",
        CALL,
        env=cli_env(tmp_path, fake),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert process.returncode == 0, text
    assert "tone 440 hertz" in text and "summary:" in text
    jobs, count = await rows(tmp_path)
    assert count == 1 and [(j.status, j.rerun) for j in jobs] == [(DONE, True)]

    # Unknown calls are refused with a message.
    process = await asyncio.create_subprocess_exec(
        *CLI, "transcribe", "999.9", env=cli_env(tmp_path, fake), stderr=asyncio.subprocess.PIPE
    )
    _, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1 and b"no recording of call 999.9" in errors


async def test_a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    """SIGKILL the worker process holding the job while the engine works on it: the other
    worker takes the job over once the lease (1 s) runs out; one transcription results."""
    await prepared(tmp_path, CALL)
    fake.script.append(Step(hold=True))
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        supervisor = await asyncio.create_subprocess_exec(
            *CLI, "worker", "--processes", "2", env=cli_env(tmp_path, fake), stdout=log, stderr=log
        )
    try:
        async with asyncio.timeout(60):
            await fake.held.wait()  # a worker is mid-job: its first request hangs
        jobs, _ = await rows(tmp_path)
        [job] = jobs
        assert job.status == RUNNING
        holder = job.worker
        victim = int(re.fullmatch(r".+:(\d+):w\d", holder).group(1))  # type: ignore[union-attr]
        os.kill(victim, signal.SIGKILL)
        fake.release.set()

        async with asyncio.timeout(30):
            while True:
                jobs, count = await rows(tmp_path)
                if jobs[0].status == DONE:
                    break
                await asyncio.sleep(0.1)
        [job] = jobs
        assert job.attempts == 2 and job.worker != holder
        assert count == 1
        runtime = build_runtime(make_settings(tmp_path))
        try:
            tenant = await runtime.tenants.require(PBX)
            found = await runtime.calls.get_transcription(tenant, CALL)
        finally:
            await runtime.engine.dispose()
        assert found is not None and found["content"] == EXPECTED
        assert len(fake.transcriptions) == 3  # the lost request, then both channels again

        # The supervisor starts a new process in place of the killed one.
        async with asyncio.timeout(15):
            while True:
                if "starting it again" in log_path.read_text():
                    break
                await asyncio.sleep(0.1)
    finally:
        if supervisor.returncode is None:
            supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(supervisor.wait(), 20)
    assert code == 0, log_path.read_text()


async def test_worker_refuses_to_start_without_its_engine(tmp_path: Path, fake: FakeOpenAI) -> None:
    await prepared(tmp_path)
    env = cli_env(tmp_path, fake, CLOUDPBX_TRANSCRIPTION_ENGINE="whisper")
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "worker",
        "--once",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert b"whisper_model_dir" in output and b"cannot run" in output


async def test_the_supervisor_stops_even_while_restarting_a_worker(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    await prepared(tmp_path)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        supervisor = await asyncio.create_subprocess_exec(
            *CLI, "worker", "--processes", "2", env=cli_env(tmp_path, fake), stdout=log, stderr=log
        )
    try:
        async with asyncio.timeout(60):
            while True:
                started = re.findall(r"worker \S+:(\d+):w\d started", log_path.read_text())
                if len(started) == 2:
                    break
                await asyncio.sleep(0.1)
        os.kill(int(started[0]), signal.SIGKILL)
        async with asyncio.timeout(10):
            while True:
                if "starting it again" in log_path.read_text():
                    break
                await asyncio.sleep(0.05)
        supervisor.send_signal(signal.SIGTERM)  # within the second before the restart
        code = await asyncio.wait_for(supervisor.wait(), 15)
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()
    assert code == 0, log_path.read_text()
    assert log_path.read_text().count(" started") == 2  # no third process was started
