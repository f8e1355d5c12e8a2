"""Shared helpers of the benchmarks: processes, percentiles, /proc readings, limits.

Everything here runs on 127.0.0.1 only; every wait is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".bench-data"
LOG_DIR = DATA_DIR / "logs"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (bounded by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_limit(wanted: int, spare: int = 256) -> int:
    """How many connections one process can hold here, at most `wanted`: the hard
    RLIMIT_NOFILE bounds it (raising that needs CAP_SYS_RESOURCE), less `spare` fds."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return wanted if hard == resource.RLIM_INFINITY else max(0, min(wanted, hard - spare))


def install_uvloop() -> str:
    """Use uvloop where installed (uvicorn picks it too), so servers and clients match."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence; nan if empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (its own threads included)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


MAX_CHILD_SECONDS = 1800.0
"""No benchmark process lives longer than this, whatever happens to the orchestrator."""


async def until_orphaned(max_seconds: float = MAX_CHILD_SECONDS) -> None:
    """Return when stdin reaches EOF (the orchestrator closed it or died) or after
    `max_seconds`: servers watch this so that none outlives its run."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max_seconds):
            while await reader.readline():
                pass


class LoopLag:
    """The event loop's longest stall: the longest time between two of its waits for I/O.

    Everything that is ready runs between two `select()` calls, and nothing else can
    (no timer fires, no socket is read) until the last of it is done, so the longest such
    stretch is the latency the loop adds to every connection alike: a GC pause, a long
    callback, a burst of sends. Measured by wrapping the stdlib loop's selector: two
    clock readings per loop turn. (A task that sleeps 1 ms and records how late it wakes
    measures the same, but cost 8 % of a core here: 4 us per delivery at 20,000/s, on the
    Python servers only; it is the fallback for uvloop, which has no selector to wrap.)

    On a shared machine a stall can also be the kernel running someone else: `busy`
    counts only the CPU the loop's own thread used in it, the part that is ours."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_busy = 0.0
        self._selector: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.longest = self.longest_busy = 0.0
        loop = asyncio.get_running_loop()
        selector = getattr(loop, "_selector", None)
        if selector is None:
            self._task = asyncio.create_task(self._sleeper(), name="bench-loop-lag")
            return
        original = selector.select
        turn_started = [time.perf_counter(), time.thread_time()]

        def select(timeout: float | None = None) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            self._record(wall - turn_started[0], cpu - turn_started[1])
            events = original(timeout)
            turn_started[:] = time.perf_counter(), time.thread_time()
            return events

        selector.select = select
        self._selector = selector

    def stop(self) -> tuple[float, float]:
        """Stop watching; returns the longest stall and the longest busy stall (seconds)
        since `start()`."""
        if self._selector is not None:
            del self._selector.select  # the instance attribute: the class's method again
            self._selector = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        return self.longest, self.longest_busy

    def _record(self, wall: float, busy: float) -> None:
        if wall > self.longest:
            self.longest = wall
        busy = min(wall, busy)
        if busy > self.longest_busy:
            self.longest_busy = busy

    async def _sleeper(self, interval: float = 0.001) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, cpu_before = loop.time(), time.thread_time()
            await asyncio.sleep(interval)
            self._record(loop.time() - before - interval, time.thread_time() - cpu_before)


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout: how the child processes talk to the orchestrator."""
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


@dataclass
class Child:
    """A child process speaking JSON lines on stdin/stdout; stderr goes to a log file."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, within: float) -> dict[str, Any]:
        """The next JSON line from the child, within `within` seconds."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + within
        late = f"{self.name}: no answer in {within:.0f}s (see {self.log_path})"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(late)
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                raise TimeoutError(late) from None
            if not raw:
                raise RuntimeError(f"{self.name} exited early (see {self.log_path}): {self.tail()}")
            text = raw.decode().strip()
            if text.startswith("{"):
                message: dict[str, Any] = orjson.loads(text)
                self.lines.append(message)
                return message

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(obj) + b"\n")
        await self.proc.stdin.drain()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace: float = 10.0) -> int | None:
        """Close stdin, wait; then SIGTERM; then SIGKILL. Never waits unbounded."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
            try:
                return await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                continue
        return None


async def spawn(name: str, module: str, *args: str, env: dict[str, str] | None = None) -> Child:
    """Start `python -m module args...` with JSON-line pipes; stderr to .bench-data/logs."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "src"), full_env.get("PYTHONPATH", "")) if p
    )
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=str(ROOT),
            env=full_env,
            limit=16 * 1024 * 1024,
        )
    return Child(name, proc, log_path)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


async def wait_for_quiet(max_wait: float, threshold: float = 0.4) -> float:
    """Wait (at most `max_wait` s) until the machine's other load is under `threshold`
    cores over a 2 s window; returns the last load seen. Other people's test runs on a
    shared 2-core machine otherwise take half the CPU from the benchmark."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        await asyncio.sleep(2.0)
        load = (machine_busy_seconds() - before) / 2.0
        if load < threshold or time.monotonic() >= deadline:
            return load


class CpuMeter:
    """CPU used by a set of processes between `start()` and `stop()`, in cores; the label
    "other" is what every other process on the machine used meanwhile (the noise)."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self.result: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, pids in self._pids.items():
            total = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):
                    total += cpu_seconds(pid)
            out[label] = total
        out["machine"] = machine_busy_seconds()
        return out

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        """Per label: cores used on average (CPU seconds / wall seconds)."""
        wall = max(1e-9, time.monotonic() - self._t0)
        end = self._read()
        self.result = {k: (end[k] - self._start.get(k, 0.0)) / wall for k in end}
        ours = sum(v for k, v in self.result.items() if k != "machine")
        self.result["other"] = max(0.0, self.result.pop("machine") - ours)
        return self.result
