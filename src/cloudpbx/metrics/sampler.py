"""The sampler: copies what the components count into the Prometheus metrics.

The components keep plain numbers (an int per counter, a state per connection), which
costs nothing per message; once per `interval` this task reads them through the small
read functions of `Sources` and sets the gauges, and turns each running total into a
counter increment. The queues that live in the database (the SMS outbox, the
transcription jobs) are read every `queue_interval`: one indexed query each, whatever
the traffic. A scrape also takes a sample first (`sample`), so what this process counts
is never older than the scrape.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter

from cloudpbx.metrics.registry import Metrics
from cloudpbx.storage.sms import OutboxDepth

log = logging.getLogger(__name__)

MAX_EVENT_NAMES = 64
"""Distinct AMI event names per server with a series of their own; later ones: `other`."""
_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
CUTOFF_CODES = (4008, 1011)
OUTBOX_STATES = ("pending", "unsure")
JOB_STATES = ("queued", "running")


@dataclass(frozen=True, slots=True)
class WebSocketReadings:
    """Open connections, and running totals since the process started."""

    connections: int
    deliveries: int
    cutoffs: Mapping[int, int]
    """Close code → connections the server closed with it."""


@dataclass(frozen=True, slots=True)
class AmiReadings:
    """One Asterisk server as this process sees it."""

    server: str
    connected: bool
    ping_rtt: float | None
    connects: int
    dropped: Mapping[str, int]
    """AMI event name → events that named no PBX (running total)."""


@dataclass
class Sources:
    """Where the sampler reads; each a small function over a component."""

    ami: Callable[[], Iterable[AmiReadings]]
    sms_gateways: Callable[[], Iterable[str]]
    """The status of each SMS gateway (`ok`, `held`, `alert`)."""
    outbox: Callable[[], Awaitable[OutboxDepth]]
    jobs: Callable[[], Awaitable[Mapping[str, int]]]
    websockets: Callable[[], WebSocketReadings] | None = None
    """Set by the server once it built its WebSocket protocol (server.py)."""


class _Totals:
    """Running totals → counter increments. A total that went down was reset (its
    component restarted): it counts from zero again."""

    def __init__(self) -> None:
        self._last: dict[Hashable, float] = {}

    def copy(self, counter: Counter, key: Hashable, total: float) -> None:
        last = self._last.get(key, 0.0)
        step = total - last if total >= last else total
        if step > 0:
            counter.inc(step)
        self._last[key] = total


@dataclass
class Sampler:
    metrics: Metrics
    sources: Sources
    interval: float = 1.0
    queue_interval: float = 10.0
    _totals: _Totals = field(default_factory=_Totals)
    _event_names: dict[str, set[str]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _queue_problem: str | None = None

    def __post_init__(self) -> None:
        self.metrics.workers.set(1)
        # Every known series present from the start (at 0), before anything happened.
        for code in CUTOFF_CODES:
            self.metrics.ws_cutoffs.labels(code=str(code))
        for state in OUTBOX_STATES:
            self.metrics.sms_outbox.labels(state=state)
        for status in JOB_STATES:
            self.metrics.transcription_jobs.labels(status=status)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        every = max(1, round(self.queue_interval / self.interval))
        tick = 0
        while True:
            try:
                self.sample()
            except Exception:  # pragma: no cover - a component's bug must not stop metrics
                log.exception("metrics: sampling failed")
            if tick % every == 0:
                await self._sample_queues_logged()
            tick += 1
            await asyncio.sleep(self.interval)

    async def _sample_queues_logged(self) -> None:
        """A database that does not answer is logged once, not every `queue_interval`
        (/healthz says it is down); the gauges keep their last values meanwhile."""
        try:
            await self.sample_queues()
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._queue_problem:
                log.warning("metrics: the SMS and job queues cannot be read: %s", problem)
            self._queue_problem = problem
        else:
            self._queue_problem = None

    def sample(self) -> None:
        """The in-memory numbers: WebSocket, AMI, SMS gateways, this process."""
        if self.sources.websockets is not None:
            self._websockets(self.sources.websockets())
        for reading in self.sources.ami():
            self._ami(reading)
        statuses = list(self.sources.sms_gateways())
        for status in ("ok", "held", "alert"):
            self.metrics.sms_gateways.labels(status=status).set(statuses.count(status))
        self._process()

    async def sample_queues(self) -> None:
        """The queues in the database: SMS outbox and transcription jobs."""
        depth = await self.sources.outbox()
        for state, count in depth.by_state.items():
            self.metrics.sms_outbox.labels(state=state).set(count)
        age = 0.0
        if depth.oldest_created is not None:
            age = max(0.0, (datetime.now(UTC) - depth.oldest_created).total_seconds())
        self.metrics.sms_outbox_age.set(age)
        for status, count in (await self.sources.jobs()).items():
            self.metrics.transcription_jobs.labels(status=status).set(count)

    def _websockets(self, reading: WebSocketReadings) -> None:
        metrics = self.metrics
        metrics.ws_connections.set(reading.connections)
        self._totals.copy(metrics.ws_deliveries, "ws.deliveries", reading.deliveries)
        for code, total in reading.cutoffs.items():
            self._totals.copy(metrics.ws_cutoffs.labels(code=str(code)), ("ws", code), total)

    def _ami(self, reading: AmiReadings) -> None:
        metrics, server = self.metrics, reading.server
        metrics.ami_up.labels(server=server).set(1 if reading.connected else 0)
        if reading.ping_rtt is not None:
            metrics.ami_ping.labels(server=server).set(reading.ping_rtt)
        self._totals.copy(
            metrics.ami_connects.labels(server=server), ("ami", server), reading.connects
        )
        by_label: dict[str, int] = {}
        for name, total in reading.dropped.items():
            label = self._event_label(server, name)
            by_label[label] = by_label.get(label, 0) + total
        for label, total in by_label.items():
            counter = metrics.ami_dropped.labels(server=server, event=label)
            self._totals.copy(counter, ("dropped", server, label), total)

    def _event_label(self, server: str, name: str) -> str:
        """The name itself for the first MAX_EVENT_NAMES well-formed names, else `other`:
        the series stay bounded whatever a PBX sends."""
        known = self._event_names.setdefault(server, set())
        if name in known:
            return name
        if len(known) < MAX_EVENT_NAMES and _EVENT_NAME.fullmatch(name):
            known.add(name)
            return name
        return "other"

    def _process(self) -> None:
        times = os.times()
        self._totals.copy(self.metrics.process_cpu, "cpu", times.user + times.system)
        rss = _resident_bytes()
        if rss is not None:
            self.metrics.process_memory.set(rss)


_STATM = Path("/proc/self/statm")


def _resident_bytes() -> int | None:
    """Resident memory now (Linux); None elsewhere."""
    try:
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
