"""Benchmark: the AMI adapter (issue 3; docs/benchmarks.md, section 4).

    .venv/bin/python -m bench.ami              # full run, about 1.5 minutes
    .venv/bin/python -m bench.ami --quick      # smoke run, about 30 seconds
    .venv/bin/python -m bench.ami --no-lab     # throughput only (no root needed)

1. Throughput on one core: every lab transcript (`tests/data/ami/*.txt`, what Asterisk
   sent) joined into one AMI session, fed to `AmiParser` in 4 KiB chunks; each message
   goes to `Translator.feed` (or `CdrConverter.convert` for `Event: Cdr`), and the
   translator is flushed after every chunk, as the backend does after each read. The
   session is replayed in a loop for a bounded time, one pass per fresh parser and
   translator (a reconnect), in this one thread. Against, in the same run: a naive
   `split(b"\\r\\n\\r\\n")` + dict of the same bytes (the floor of any Python parser),
   the parser alone, and the same work in the bursts the lab delivered them (everything
   that arrived in the same millisecond, from the `.jsonl` transcripts).
   Target: >= 20,000 messages/s parsed and translated.
2. Latency on the lab (needs root): the real server (`bench.serve`, production app and
   config, `backend = "asterisk"`) in its own process in front of the lab; this process
   holds a WebSocket client on `/ws/pbx_MojaCentrala` and its own raw AMI session to the
   lab. Phone 103 is stopped and started in turn (it un-REGISTERs / REGISTERs); for each
   change, the delay from the `ExtensionStatus` arriving on the raw AMI socket to the
   matching `extstatus` arriving on the WebSocket. Both receive times are taken in this
   process (`time.perf_counter()`, in `data_received` for AMI). The server gathers AMI
   reads for `flush_delay` (5 ms) before translating, so ~5 ms is by design.

Everything runs on 127.0.0.1; every loop is bounded in count and time. Results: stdout,
and .bench-data/results-ami-{quick,full}.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.common import DATA_DIR, HOST, ROOT, percentile, spawn, wait_for_quiet
from bench.report import Report, ms, rate, summary, table
from bench.servers import Server, cloudpbx_env
from cloudpbx.adapters.asterisk.cdr import CdrConverter
from cloudpbx.adapters.asterisk.framing import BANNER_PREFIX, AmiParser, serialize_action
from cloudpbx.adapters.asterisk.tenancy import TenantMap, TenantRule
from cloudpbx.adapters.asterisk.translate import Translator
from cloudpbx.lab import Lab

SUITE = "ami"
TARGET = 20_000
"""Messages per second, parsed and translated, on one core (issue 3)."""
CHUNK = 4096
TRANSCRIPTS = ROOT / "tests" / "data" / "ami"
PBX = "MojaCentrala"
KEY = "bench-ami-key-00000000000000000001"
TENANTS = TenantMap(
    [TenantRule(PBX, queues=frozenset({"Kolejka1"}), conferences=frozenset({"SesjaRady"}))]
)
MAX_PASSES = 1_000_000
PHONE = 103
"""Not a queue member (101 and 102 are), so a change is one `subscriber` + `extstatus`."""
FLUSH_DELAY = 0.005
"""`ServerConfig.flush_delay`'s default, which the bench server runs with."""
LOCK_WAIT_S = 300.0
"""How long to wait for a test session that holds the lab (tests/lab_fixtures.py)."""
CHANGE_WAIT_S = 30.0
"""How long one phone change may take to show on both sockets."""


# -- 1. throughput ----------------------------------------------------------------------------


def transcript_paths() -> list[Path]:
    return sorted(p for p in TRANSCRIPTS.glob("*.txt") if not p.name.endswith(".sent.txt"))


def _drop_banner(data: bytes) -> bytes:
    if data.startswith(BANNER_PREFIX.encode()):
        return data[data.index(b"\n") + 1 :]
    return data


def session_bytes() -> bytes:
    """Every transcript as one AMI session: the first banner kept, the others dropped (a
    banner is only valid as the first line of a connection)."""
    parts = [path.read_bytes() for path in transcript_paths()]
    return b"".join([parts[0], *(_drop_banner(part) for part in parts[1:])])


def in_chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def lab_bursts() -> list[bytes]:
    """The same session cut as the lab delivered it: one chunk per millisecond of receive
    time (tests/data/ami/*.jsonl), banners after the first dropped."""
    chunks: list[bytes] = []
    for index, path in enumerate(transcript_paths()):
        with path.with_suffix(".jsonl").open(encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines]
        incoming = [row for row in rows if row["dir"] == "in"]
        for _, group in groupby(incoming, key=lambda row: row["t"]):
            chunk = "".join(str(row["raw"]) for row in group).encode("utf-8")
            if index:
                chunk = _drop_banner(chunk)
            if chunk:
                chunks.append(chunk)
    return chunks


@dataclass
class Tally:
    messages: int = 0
    events: int = 0
    batches: int = 0
    cdrs: int = 0


def parse_and_translate(chunks: Sequence[bytes]) -> Tally:
    """One pass, as the backend does it: per read, parse; per message, translate (or
    convert a CDR); then flush the translator."""
    parser = AmiParser()
    translator = Translator(TENANTS)
    converter = CdrConverter(TENANTS, asterisk_tz=UTC)
    tally = Tally()
    for chunk in chunks:
        messages = parser.feed(chunk)
        tally.messages += len(messages)
        for msg in messages:
            if msg.event == "Cdr":
                if converter.convert(msg) is not None:
                    tally.cdrs += 1
            else:
                translator.feed(msg)
        for _, events in translator.flush():
            tally.batches += 1
            tally.events += len(events)
    return tally


def parse_only(chunks: Sequence[bytes]) -> Tally:
    parser = AmiParser()
    tally = Tally()
    for chunk in chunks:
        tally.messages += len(parser.feed(chunk))
    return tally


def naive_split(data: bytes) -> Tally:
    """The baseline: split the whole session on blank lines, one dict per message (no
    incremental reads, no repeated headers, no case-insensitive lookup)."""
    tally = Tally()
    for block in data.split(b"\r\n\r\n"):
        if block:
            text = block.decode("utf-8", "replace")
            headers = dict(line.split(": ", 1) for line in text.split("\r\n") if ": " in line)
            tally.messages += 1 if headers else 0
    return tally


@dataclass
class Throughput:
    name: str
    messages: int
    passes: int
    wall: float
    cpu: float
    tally: Tally

    @property
    def per_second(self) -> float:
        return self.messages / self.wall

    @property
    def per_cpu_second(self) -> float:
        return self.messages / max(self.cpu, 1e-9)

    @property
    def us_per_message(self) -> float:
        return 1e6 * self.cpu / max(self.messages, 1)

    def as_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "passes": self.passes,
            "wall": self.wall,
            "cpu": self.cpu,
            "per_second": self.per_second,
            "per_cpu_second": self.per_cpu_second,
            "per_pass": vars(self.tally),
        }


def timed(name: str, work: Callable[[], Tally], seconds: float) -> Throughput:
    """Run `work` (one pass) again and again for `seconds` (one warm-up pass first)."""
    first = work()
    gc.collect()
    passes = messages = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while passes < MAX_PASSES and now < deadline:
        messages += work().messages
        passes += 1
        now = time.perf_counter()
    return Throughput(name, messages, passes, now - start, time.process_time() - cpu_start, first)


def throughput(report: Report, *, quick: bool) -> dict[str, Any]:
    data = session_bytes()
    chunks = in_chunks(data)
    bursts = lab_bursts()
    main_seconds = 3.0 if quick else 10.0
    side_seconds = 1.0 if quick else 3.0
    print(
        f"[{SUITE}] throughput: {len(transcript_paths())} transcripts, {len(data):,} bytes, "
        f"{len(chunks)} chunks of {CHUNK} B ({len(bursts)} lab bursts); "
        f"{main_seconds:.0f} s parse+translate, {side_seconds:.0f} s per comparison"
    )
    runs = [
        timed("parse+translate, 4 KiB reads", lambda: parse_and_translate(chunks), main_seconds),
        timed("parse only, 4 KiB reads", lambda: parse_only(chunks), side_seconds),
        timed("naive split + dict (baseline)", lambda: naive_split(data), side_seconds),
        timed("parse+translate, lab bursts", lambda: parse_and_translate(bursts), side_seconds),
    ]
    main, parser, naive, burst = runs
    rows = [
        [
            r.name,
            f"{r.messages:,}",
            f"{r.wall:.1f} s",
            rate(r.per_second),
            f"{r.us_per_message:.1f}",
            f"{r.cpu / r.wall:.2f}",
        ]
        for r in runs
    ]
    print(table(["work", "messages", "wall", "rate", "us/msg (CPU)", "cores"], rows, (1, 3, 4, 5)))
    per_pass = main.tally
    report.add(
        SUITE,
        "AMI parse+translate, 4 KiB reads",
        rate(main.per_second),
        f">= {TARGET:,}/s",
        main.per_second >= TARGET,
        f"{main.us_per_message:.1f} us/msg; {main.messages:,} msgs in {main.wall:.1f} s at "
        f"{main.cpu / main.wall:.2f} cores; per pass of {per_pass.messages} msgs "
        f"{per_pass.batches} batches / {per_pass.events} events, {per_pass.cdrs} CDRs",
    )
    report.add(
        SUITE,
        "  vs naive split+dict baseline",
        f"{naive.per_second / main.per_second:.2f}x slower",
        note=f"baseline {rate(naive.per_second)} ({naive.us_per_message:.1f} us/msg)",
    )
    report.add(
        SUITE,
        "  parser alone, 4 KiB reads",
        rate(parser.per_second),
        note=f"{parser.us_per_message:.1f} us/msg: "
        f"{100 * parser.us_per_message / main.us_per_message:.0f} % of parse+translate",
    )
    report.add(
        SUITE,
        "  parse+translate, lab bursts",
        rate(burst.per_second),
        note=f"{len(bursts)} reads/pass (one per ms of the transcripts), flush after each",
    )
    return {
        "bytes": len(data),
        "chunk": CHUNK,
        "bursts": len(bursts),
        "runs": {r.name: r.as_json() for r in runs},
    }


# -- 2. latency on the lab -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    at: float
    exten: str
    status: int


class AmiWatcher(asyncio.Protocol):
    """A raw AMI session that timestamps every `ExtensionStatus` on arrival."""

    def __init__(self) -> None:
        self.parser = AmiParser()
        self.seen: list[Seen] = []
        self.transport: asyncio.Transport | None = None
        self.login: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        at = time.perf_counter()
        for msg in self.parser.feed(data):
            if msg.event == "ExtensionStatus":
                with contextlib.suppress(ValueError):
                    self.seen.append(Seen(at, msg.value("Exten"), int(msg.value("Status"))))
            elif msg.action_id == "bench-login" and not self.login.done():
                self.login.set_result(msg.value("Response"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.login.done():
            self.login.set_exception(ConnectionError(f"AMI closed: {exc}"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(serialize_action("Logoff", action_id="bench-logoff"))
            self.transport.close()


async def ami_watcher(host: str, port: int, user: str, secret: str) -> AmiWatcher:
    loop = asyncio.get_running_loop()
    _, watcher = await asyncio.wait_for(loop.create_connection(AmiWatcher, host, port), timeout=10)
    assert watcher.transport is not None
    login = {"Username": user, "Secret": secret, "Events": "call"}
    watcher.transport.write(serialize_action("Login", login, action_id="bench-login"))
    answer = await asyncio.wait_for(watcher.login, timeout=10)
    if answer != "Success":
        watcher.close()
        raise RuntimeError(f"AMI login refused: {answer}")
    return watcher


async def read_extstatus(ws: ClientConnection, into: list[Seen]) -> None:
    with contextlib.suppress(Exception):
        async for raw in ws:
            at = time.perf_counter()
            text = orjson.loads(raw).get("text") or {}
            ext = text.get("extstatus")
            if ext is not None:
                into.append(Seen(at, str(ext["exten"]), int(ext["status"])))


async def first_match(seen: list[Seen], since: int, exten: str, status: int, within: float) -> Seen:
    deadline = time.monotonic() + within
    while True:
        for item in seen[since:]:
            if item.exten == exten and item.status == status:
                return item
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no ExtensionStatus/extstatus {exten}={status} in {within:.0f} s")
        await asyncio.sleep(0.005)


@contextlib.contextmanager
def lab_session(root: Path, wait: float) -> Iterator[None]:
    """The lock a pytest session holds on the lab (tests/lab_fixtures.py), so that a test
    run does not take the lab down under the benchmark, nor the benchmark under it."""
    path = root.parent / f".{root.name}.tests.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    message = f"a test session held the lab ({path}) for {wait:.0f} s"
                    raise TimeoutError(message) from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


def write_toml(path: Path, host: str, port: int, user: str, secret: str) -> Path:
    path.write_text(
        f"""
[[servers]]
name = "lab"
host = "{host}"
port = {port}
username = "{user}"
secret = "{secret}"
timezone = "UTC"
reconnect_min = 0.2
reconnect_max = 1.0

[[servers.pbx]]
name = "{PBX}"
queues = ["Kolejka1"]
conferences = ["SesjaRady"]
"""
    )
    return path


def _remove_database(database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


async def seed(database: Path, data_dir: Path) -> None:
    """A fresh database with the lab's PBX and a key."""
    from cloudpbx.runtime import build_runtime
    from cloudpbx.settings import Settings

    await asyncio.to_thread(_remove_database, database)
    runtime = build_runtime(
        Settings(database_url=f"sqlite:///{database}", data_dir=data_dir, sms_gateway="none")
    )
    try:
        await runtime.migrate()
        await runtime.tenants.create(PBX, "Europe/Warsaw")
        await runtime.tenants.create_key(PBX, "bench", KEY)
    finally:
        await runtime.engine.dispose()


async def measure_changes(
    lab: Lab, watcher: AmiWatcher, ws_seen: list[Seen], changes: int, budget: float
) -> tuple[list[float], list[dict[str, Any]]]:
    """Stop / start the phone `changes` times (bounded by `budget` seconds); per change
    the delay from the raw `ExtensionStatus` to the WebSocket's `extstatus`."""
    exten = str(PHONE)
    latencies: list[float] = []
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + budget
    for index in range(changes):
        if time.monotonic() >= deadline:
            print(f"[{SUITE}] time budget of {budget:.0f} s spent after {index} changes")
            break
        stopping = lab.phone_pid(PHONE) is not None
        status = 4 if stopping else 0
        raw_from, ws_from = len(watcher.seen), len(ws_seen)
        started = time.perf_counter()
        if stopping:
            trigger = asyncio.to_thread(lab.stop_phone, PHONE)
        else:
            trigger = asyncio.to_thread(lab.start_phone, PHONE, wait=False)
        raw, ws, _ = await asyncio.gather(
            first_match(watcher.seen, raw_from, exten, status, CHANGE_WAIT_S),
            first_match(ws_seen, ws_from, exten, status, CHANGE_WAIT_S),
            trigger,
        )
        latencies.append(ws.at - raw.at)
        samples.append(
            {
                "status": status,
                "ami_after_trigger": raw.at - started,
                "latency": ws.at - raw.at,
            }
        )
        await asyncio.sleep(0.3)  # let the change settle; the next one is its own flush
    return latencies, samples


async def latency(report: Report, *, quick: bool) -> dict[str, Any]:
    if os.geteuid() != 0:
        report.add(SUITE, "AMI -> WebSocket latency", "-", note="skipped: the lab needs root")
        return {"skipped": "not root"}
    changes = 10 if quick else 40
    budget = 120.0 if quick else 300.0
    lab = Lab()
    work = DATA_DIR / "ami"
    work.mkdir(parents=True, exist_ok=True)
    database = DATA_DIR / "ami.db"
    data_dir = DATA_DIR / "server-data"
    details: dict[str, Any] = {"changes_wanted": changes}
    server: Server | None = None
    watcher: AmiWatcher | None = None
    with lab_session(lab.root, LOCK_WAIT_S):
        print(f"[{SUITE}] lab: up (built: {lab.is_built()}, running: {lab.is_up()})")
        started_lab = await asyncio.to_thread(lab.up, timeout=90)
        details["lab_started_here"] = started_lab
        try:
            if lab.phone_pid(PHONE) is None:
                await asyncio.to_thread(lab.start_phone, PHONE)
            host, port = lab.ami_address
            user, secret = lab.settings.ami_user, lab.settings.ami_secret
            toml = write_toml(work / "lab.toml", host, port, user, secret)
            await seed(database, data_dir)
            env = cloudpbx_env(database, "asyncio")
            env.update(CLOUDPBX_BACKEND="asterisk", CLOUDPBX_ASTERISK_CONFIG=str(toml))
            child = await spawn("ami-server", "bench.serve", env=env)
            server = Server("cloudpbx", child, 0)
            server.port = int((await child.read(within=60))["port"])
            watcher = await ami_watcher(host, port, user, secret)
            ws_seen: list[Seen] = []
            # last_event_id=0: the history too, so the first resync's states are seen
            # whether the server published them before or after this connection.
            url = f"ws://{HOST}:{server.port}/ws/pbx_{PBX}?pbxkey={KEY}&last_event_id=0"
            async with connect(url, proxy=None, compression=None) as ws:
                reader = asyncio.create_task(read_extstatus(ws, ws_seen))
                try:
                    await first_match(ws_seen, 0, str(PHONE), 0, CHANGE_WAIT_S)
                    print(f"[{SUITE}] server connected to the lab; warm-up (2 changes)")
                    await measure_changes(lab, watcher, ws_seen, 2, 2 * CHANGE_WAIT_S)
                    print(f"[{SUITE}] {changes} changes of phone {PHONE} (stop / start)")
                    values, samples = await measure_changes(lab, watcher, ws_seen, changes, budget)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
        except Exception as exc:
            report.fail(SUITE, "AMI -> WebSocket latency", f"{type(exc).__name__}: {exc}")
            details["error"] = repr(exc)
            return details
        finally:
            if watcher is not None:
                watcher.close()
            if server is not None:
                await server.child.stop()
            if lab.phone_pid(PHONE) is None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(lab.start_phone, PHONE)
            if started_lab:
                print(f"[{SUITE}] lab: down (it was started here)")
                await asyncio.to_thread(lab.down)
    if not values:
        report.fail(SUITE, "AMI -> WebSocket latency", "no change measured in the time budget")
        return details
    ordered = sorted(values)
    p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
    details.update(
        {
            "changes": len(values),
            "p50": p50,
            "p99": p99,
            "min": ordered[0],
            "max": ordered[-1],
            "samples": samples,
        }
    )
    print(
        table(
            ["changes", "min", "p50", "p99", "max"],
            [[str(len(values)), ms(ordered[0]), ms(p50), ms(p99), ms(ordered[-1])]],
            (0, 1, 2, 3, 4),
        )
    )
    note = (
        f"{len(values)} ExtensionStatus changes of phone {PHONE} (un-/REGISTER); "
        f"min {ms(ordered[0])}, max {ms(ordered[-1])}; includes the server's "
        f"{FLUSH_DELAY * 1000:.0f} ms flush_delay"
    )
    report.add(SUITE, "AMI ExtensionStatus -> WS extstatus p50", ms(p50), note=note)
    report.add(SUITE, "AMI ExtensionStatus -> WS extstatus p99", ms(p99))
    return details


# -- the suite ------------------------------------------------------------------------------------


async def run(report: Report, *, quick: bool, lab: bool = True) -> None:
    details: dict[str, Any] = {"throughput": throughput(report, quick=quick)}
    if lab:
        details["latency"] = await latency(report, quick=quick)
    report.details[SUITE] = details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ami", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--no-lab", action="store_true", help="throughput only, no lab latency")
    parser.add_argument("--wait-quiet", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    mode = "quick" if args.quick else "full"
    report = Report()

    async def everything() -> None:
        wait = args.wait_quiet if args.wait_quiet is not None else (10.0 if args.quick else 30.0)
        if wait > 0:
            load = await wait_for_quiet(wait)
            report.details["background_cores"] = load
            if load >= 0.4:
                print(f"[{SUITE}] note: other processes keep {load:.1f} of the CPUs busy")
        await run(report, quick=args.quick, lab=not args.no_lab)

    started = time.monotonic()
    asyncio.run(everything())
    print("=" * 100)
    print(summary(report))
    elapsed = time.monotonic() - started
    print(f"\n({mode} run, {elapsed:.0f}s, {os.cpu_count()} CPUs)")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / f"results-ami-{mode}.json").write_bytes(
        orjson.dumps(
            {"mode": mode, "seconds": elapsed, "cpus": os.cpu_count(), **report.as_json()},
            option=orjson.OPT_INDENT_2,
        )
    )
    return 1 if any(r.verdict == "FAIL" for r in report.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
