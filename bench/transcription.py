"""Benchmark: transcription (docs/transcription.md).

    .venv/bin/python -m bench.transcription            # full run, a few minutes
    .venv/bin/python -m bench.transcription --quick    # smoke run, about a minute
    .venv/bin/python -m bench.transcription --whisper-model DIR   # also faster-whisper

1. Real-time factor (processing seconds per second of call) of each local engine on this
   CPU: PocketSphinx always, faster-whisper when `--whisper-model` (or
   CLOUDPBX_WHISPER_MODEL_DIR) names a model folder. The audio is an English call made
   with espeak-ng, as Asterisk records it: 8 kHz, one party per channel.
2. Jobs per minute with N worker processes (`cloudpbx worker --processes N --once` on a
   queue of such calls, PocketSphinx), process start-up included and excluded.
3. `GET /cdr` (one day of 10,000 rows) latency while the queue is worked by 2 worker
   processes, against the same requests with no worker: p50 must not grow more than 20 %.
   Workers run at `transcription_nice` (10); the number without that is shown too.

Everything runs on 127.0.0.1: the server in its own process (bench.serve), the workers
in theirs, the HTTP load from bench.httpload. Results: stdout, and
.bench-data/results-transcription-{quick,full}.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.common import DATA_DIR, LOG_DIR, ROOT, CpuMeter, percentile, spawn, wait_for_quiet
from bench.report import Report, ms, summary, table
from bench.servers import Server, cloudpbx_env, start_cloudpbx

SUITE = "transcription"
PBX = "BenchTx"
KEY = "bench-transcription-key-0000000001"
DAY = "2026-06-15"
CDR_ROWS = 10_000
LATENCY_TARGET = 1.20
DIALOGUE = [
    (0, "good morning this is the customer service how can I help you today"),
    (1, "hello I am calling about my order it did not arrive yesterday"),
    (0, "I am sorry to hear that can you give me the order number please"),
    (1, "the order number is four five six seven"),
    (0, "thank you I can see it here it will be delivered tomorrow morning"),
    (1, "that is great thank you very much for your help"),
    (0, "you are welcome please call me back on monday if it does not arrive"),
    (1, "I will do that goodbye"),
]
"""About 30 seconds of call; both parties speak half the time each."""


# -- audio ----------------------------------------------------------------------------------


def synthesise_call(path: Path) -> float:
    """An 8 kHz stereo WAV of DIALOGUE (agent left, customer right); its duration."""
    from cloudpbx.adapters.transcription.audio import read_audio, resample

    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is missing: apt-get install espeak-ng")
    rate, position, placed = 8000, 0.5, []
    with tempfile.TemporaryDirectory() as folder:
        line = Path(folder) / "line.wav"
        for channel, text in DIALOGUE:
            subprocess.run(
                ["espeak-ng", "-v", "en-us+klatt2", "-s", "150", "-w", str(line), text], check=True
            )
            audio = read_audio(line)
            speech = resample(audio.channels[0], audio.rate, rate)
            placed.append((channel, int(position * rate), speech))
            position += len(speech) / rate + 0.6
    channels = np.zeros((2, int((position + 0.5) * rate)), np.float32)
    for channel, start, speech in placed:
        channels[channel, start : start + len(speech)] = speech
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((channels.T * 0.8 * 32767).astype("<i2").tobytes())
    return channels.shape[1] / rate


def real_time_factor(engine_name: str, path: Path, duration: float, **settings: Any) -> float:
    """Seconds of processing per second of call (decode, resample, both channels), best
    of two runs after a warm-up (model load excluded)."""
    from cloudpbx.adapters.transcription import EngineFactory
    from cloudpbx.settings import Settings

    factory = EngineFactory(
        Settings(transcription_engine=engine_name, summariser="extractive", **settings)
    )
    pipeline = factory("bench")
    assert pipeline is not None
    try:
        pipeline.run(path, "wav", ("101", "102"))
        times = []
        for _ in range(2):
            started = time.perf_counter()
            pipeline.run(path, "wav", ("101", "102"))
            times.append(time.perf_counter() - started)
    finally:
        factory.close()
    return min(times) / duration


# -- database -------------------------------------------------------------------------------


def _remove(database: Path, folder: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


async def seed(database: Path, recordings: Path, call: Path, jobs: int) -> None:
    """A fresh database: the PBX and its key, a day of CDR rows, `jobs` queued calls."""
    from cloudpbx.domain.records import CdrRecord, RecordingInfo
    from cloudpbx.domain.states import Disposition
    from cloudpbx.runtime import build_runtime
    from cloudpbx.settings import Settings

    await asyncio.to_thread(_remove, database, recordings / PBX)
    settings = Settings(
        database_url=f"sqlite:///{database}",
        data_dir=recordings.parent,
        transcription_engine="pocketsphinx",
        sms_gateway="none",
    )
    runtime = build_runtime(settings)
    try:
        await runtime.migrate()
        await runtime.tenants.create(PBX, "Europe/Warsaw")
        await runtime.tenants.create_key(PBX, "bench", KEY)
        start = datetime.fromisoformat(f"{DAY}T00:00:00").replace(tzinfo=UTC)
        rows = [
            CdrRecord(
                started_at=start + timedelta(seconds=8 * n + 3600),
                clid=f'"Bench {n}" <{100 + n % 50}>',
                src=str(100 + n % 50),
                dst=f"48500{n:06d}",
                channel=f"SIP/{PBX}-{100 + n % 50}-{n:08x}",
                dstchannel=f"SIP/trunk-{n:08x}",
                lastapp="Dial",
                duration=60,
                billsec=45,
                disposition=Disposition.ANSWERED,
                uniqueid=f"1781500000.{n}",
                cost=12,
                zone="mobile",
            )
            for n in range(CDR_ROWS)
        ]
        for first in range(0, CDR_ROWS, 2000):
            await runtime.ingest.cdrs(PBX, rows[first : first + 2000])
        folder = runtime.ingest.recordings_dir(PBX)
        for n in range(jobs):
            uniqueid = f"1781500000.{n}"
            shutil.copyfile(call, folder / f"{uniqueid}.wav")
            info = RecordingInfo(
                uniqueid, rows[n].started_at, "101", "102", "wav", f"{uniqueid}.wav", 1
            )
            await runtime.ingest.recording(PBX, info)
    finally:
        await runtime.engine.dispose()


async def finished_jobs(database: Path) -> int:
    import sqlite3

    def count() -> int:
        with sqlite3.connect(database) as conn:
            query = "SELECT count(*) FROM transcription_job WHERE status IN ('done', 'failed')"
            return int(conn.execute(query).fetchone()[0])

    return await asyncio.to_thread(count)


# -- processes ------------------------------------------------------------------------------


def worker_env(database: Path, nice: int) -> dict[str, str]:
    env = {**os.environ, **cloudpbx_env(database, "asyncio")}
    env.update(
        CLOUDPBX_TRANSCRIPTION_ENGINE="pocketsphinx",
        CLOUDPBX_SUMMARISER="extractive",
        CLOUDPBX_TRANSCRIPTION_POLL_INTERVAL="0.2",
        CLOUDPBX_TRANSCRIPTION_NICE=str(nice),
        CLOUDPBX_LOG_LEVEL="warning",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    )
    return env


async def start_workers(
    database: Path, processes: int, once: bool, nice: int = 10
) -> asyncio.subprocess.Process:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    args = ["worker", "--processes", str(processes), *(["--once"] if once else [])]
    with (LOG_DIR / f"transcription-workers-{processes}.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from cloudpbx.cli.main import app; app()",
            *args,
            env=worker_env(database, nice),
            stdout=log,
            stderr=log,
        )


async def jobs_per_minute(
    database: Path, recordings: Path, call: Path, jobs: int, processes: int
) -> dict[str, float]:
    await seed(database, recordings, call, 0)
    started = time.monotonic()
    empty = await start_workers(database, processes, once=True)
    await asyncio.wait_for(empty.wait(), 120)
    startup = time.monotonic() - started
    await seed(database, recordings, call, jobs)
    started = time.monotonic()
    proc = await start_workers(database, processes, once=True)
    await asyncio.wait_for(proc.wait(), 1800)
    wall = time.monotonic() - started
    done = await finished_jobs(database)
    return {
        "jobs": float(done),
        "wall": wall,
        "startup": startup,
        "per_minute": 60 * done / wall,
        "per_minute_running": 60 * done / max(wall - startup, 1e-3),
    }


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the worker processes of a supervisor)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def cdr_latency(
    server: Server, seconds: float, workers: list[int] | None = None
) -> dict[str, Any]:
    query = f"/cdr?datestart={DAY}&datestop={DAY}"
    args = ["--port", str(server.port), "--path", query, "--conns", "1", "--duration", str(seconds)]
    args += ["--max-requests", "100000", "--expect-bytes", "0"]
    args += ["--header", f"Authorization: Bearer {KEY}"]
    child = await spawn("transcription-cdr-load", "bench.httpload", *args)
    meter = CpuMeter(
        {"server": [server.pid], "client": [child.pid], "workers": list(workers or [])}
    )
    meter.start()
    try:
        result = await child.read(within=seconds + 120)
    finally:
        result_cpu = meter.stop()
        await child.stop()
    latencies = sorted(result["latencies"])
    return {
        "requests": result["requests"],
        "errors": result["errors"],
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "cpu": result_cpu,
    }


async def latency_under_work(
    database: Path, recordings: Path, call: Path, jobs: int, seconds: float, nice: int
) -> dict[str, Any]:
    await seed(database, recordings, call, jobs)
    server = await start_cloudpbx("transcription-server", database)
    try:
        await cdr_latency(server, 1.0)  # warm-up
        before = await cdr_latency(server, seconds)
        workers = await start_workers(database, 2, once=False, nice=nice)
        try:
            await asyncio.sleep(3.0)  # both workers started and decoding
            done = await finished_jobs(database)
            pids = await asyncio.to_thread(children_of, workers.pid)
            busy = await cdr_latency(server, seconds, pids)
            progress = await finished_jobs(database) - done
        finally:
            workers.terminate()
            await asyncio.wait_for(workers.wait(), 30)
        after = await cdr_latency(server, seconds)
    finally:
        await server.stop()
    # Idle is measured before and after the busy window and averaged: other load on a
    # shared machine drifts, and this way it weighs on both sides alike.
    idle = {key: (before[key] + after[key]) / 2 for key in ("p50", "p95", "requests", "errors")}
    return {
        "idle": idle,
        "busy": busy,
        "before": before,
        "after": after,
        "jobs_done_meanwhile": progress,
    }


# -- the suite ------------------------------------------------------------------------------


async def run(report: Report, *, quick: bool, whisper_model: Path | None = None) -> None:
    work = DATA_DIR / "transcription"
    work.mkdir(parents=True, exist_ok=True)
    call = work / "call.wav"
    duration = synthesise_call(call)
    database = DATA_DIR / "transcription.db"
    recordings = DATA_DIR / "server-data" / "recordings"

    print(f"[{SUITE}] real-time factor on a {duration:.0f} s stereo 8 kHz call")
    rtf = await asyncio.to_thread(real_time_factor, "pocketsphinx", call, duration)
    report.add(
        SUITE,
        "RTF pocketsphinx (8 kHz stereo)",
        f"{rtf:.3f}",
        note=f"{1 / rtf:.1f}x real time per core",
    )
    details: dict[str, Any] = {"call_seconds": duration, "rtf": {"pocketsphinx": rtf}}
    model = whisper_model or (
        Path(p) if (p := os.environ.get("CLOUDPBX_WHISPER_MODEL_DIR")) else None
    )
    if model is None:
        report.add(SUITE, "RTF whisper", "-", note="no model folder (--whisper-model DIR)")
    else:
        try:
            whisper = await asyncio.to_thread(
                real_time_factor, "whisper", call, duration, whisper_model_dir=model
            )
        except Exception as exc:  # a model that does not load is a result here
            report.fail(SUITE, "RTF whisper", str(exc))
        else:
            details["rtf"]["whisper"] = whisper
            report.add(SUITE, f"RTF whisper ({model.name})", f"{whisper:.3f}")

    jobs = 4 if quick else 12
    details["throughput"] = {}
    for processes in (1, 2):
        print(f"[{SUITE}] {jobs} jobs with {processes} worker process(es)")
        result = await jobs_per_minute(database, recordings, call, jobs, processes)
        details["throughput"][processes] = result
        report.add(
            SUITE,
            f"jobs/min, {processes} worker(s)",
            f"{result['per_minute']:.1f}",
            note=(
                f"{result['jobs']:.0f} calls of {duration:.0f} s in {result['wall']:.1f} s; "
                f"{result['per_minute_running']:.1f}/min after the "
                f"{result['startup']:.1f} s start"
            ),
        )

    seconds = 4.0 if quick else 10.0
    details["latency"] = {}
    for nice in (10, 0):
        print(f"[{SUITE}] /cdr latency, idle and with 2 workers at nice {nice}")
        result = await latency_under_work(database, recordings, call, 40, seconds, nice)
        details["latency"][nice] = result
        idle, busy = result["idle"], result["busy"]
        ratio = busy["p50"] / idle["p50"]
        row = [ms(idle["p50"]), ms(busy["p50"]), ms(idle["p95"]), ms(busy["p95"])]
        print(table(["idle p50", "busy p50", "idle p95", "busy p95"], [row]))
        report.add(
            SUITE,
            f"/cdr p50 with 2 workers (nice {nice})",
            f"{ratio:.2f}x",
            f"<= {LATENCY_TARGET:.2f}x" if nice == 10 else "",
            ratio <= LATENCY_TARGET if nice == 10 else None,
            f"{ms(idle['p50'])} -> {ms(busy['p50'])}; p95 {ms(idle['p95'])} -> "
            f"{ms(busy['p95'])}; CPU (cores) server {busy['cpu']['server']:.2f}, "
            f"workers {busy['cpu']['workers']:.2f}, others {busy['cpu']['other']:.2f}",
        )
    report.details[SUITE] = details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.transcription", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--whisper-model", type=Path, default=None, help="faster-whisper model folder"
    )
    parser.add_argument("--wait-quiet", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    mode = "quick" if args.quick else "full"
    report = Report()

    async def everything() -> None:
        load = await wait_for_quiet(
            args.wait_quiet if args.wait_quiet is not None else (10.0 if args.quick else 30.0)
        )
        report.details["background_cores"] = load
        if load >= 0.4:
            print(f"[{SUITE}] note: other processes keep {load:.1f} of the CPUs busy")
        await run(report, quick=args.quick, whisper_model=args.whisper_model)

    started = time.monotonic()
    asyncio.run(everything())
    print("=" * 100)
    print(summary(report))
    elapsed = time.monotonic() - started
    print(f"\n({mode} run, {elapsed:.0f}s, {os.cpu_count()} CPUs)")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / f"results-transcription-{mode}.json").write_bytes(
        orjson.dumps(
            {"mode": mode, "seconds": elapsed, "cpus": os.cpu_count(), **report.as_json()},
            option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
        )
    )
    return 1 if any(r.verdict == "FAIL" for r in report.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
