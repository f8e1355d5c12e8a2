"""The Prometheus metrics of one server process, and their exposition.

Single process: the metrics live in a registry of their own (with the standard process,
platform and GC collectors), so two servers in one test process never share a value.

Several processes (`PROMETHEUS_MULTIPROC_DIR` set before the process starts, as
`cloudpbx serve --workers N` does): prometheus-client writes every value to a per-process
file in that folder, and a scrape of any process aggregates all of them with
`MultiProcessCollector`: counters and histograms add up (those of dead processes too, so a
rate does not drop when a worker restarts), and each gauge says how it combines
(`multiprocess_mode`). The gauges of a dead process must go: the parent calls
`mark_process_dead(pid)`, and every scrape also drops those whose process is gone (a
worker killed -9 under a parent that did not notice still disappears from the gauges).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus reads; `generate_latest` writes it (our
names need none of the 1.0.0 format's escaping, which newer clients announce)."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; finer than the default at the low end, where the REST answers are."""
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def multiprocess_dir() -> Path | None:
    """The shared folder of a multi-process server, None for a single process."""
    value = os.environ.get(MULTIPROC_ENV, "")
    return Path(value) if value else None


def mark_process_dead(pid: int) -> None:
    """A worker `pid` is gone: its live gauges stop counting (the parent calls this)."""
    folder = multiprocess_dir()
    if folder is not None:
        _forget(pid, folder)


class Metrics:
    """Every metric of docs/operations.md#metrics, in one process."""

    def __init__(self) -> None:
        self.folder = multiprocess_dir()
        if self.folder is not None and not self.folder.is_dir():
            raise ValueError(
                f"{MULTIPROC_ENV}={self.folder} is not a folder: create it (empty) before "
                "the server processes start, or unset it for a single process"
            )
        # Multi-process: values go to files, not to a registry; a scrape reads the files.
        registry = None if self.folder is not None else CollectorRegistry()
        self.registry = registry
        if registry is not None:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

        self.workers = Gauge(
            "cloudpbx_workers",
            "Server processes alive (1 per process)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.process_memory = Gauge(
            "cloudpbx_process_resident_memory_bytes",
            "Resident memory of each server process",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.process_cpu = Counter(
            "cloudpbx_process_cpu_seconds",
            "CPU time (user + system) of the server processes",
            registry=registry,
        )

        self.ws_connections = Gauge(
            "cloudpbx_websocket_connections",
            "Open WebSocket connections",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ws_deliveries = Counter(
            "cloudpbx_websocket_deliveries",
            "Event messages handed to WebSocket subscribers",
            registry=registry,
        )
        self.ws_cutoffs = Counter(
            "cloudpbx_websocket_cutoffs",
            "WebSocket clients the server closed: 4008 too slow, 1011 keep-alive timeout",
            ["code"],
            registry=registry,
        )

        self.ami_up = Gauge(
            "cloudpbx_ami_up",
            "1 while a process holds a logged-in AMI connection to the Asterisk server",
            ["server"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.ami_ping = Gauge(
            "cloudpbx_ami_ping_rtt_seconds",
            "Round trip of the last keep-alive Ping to the Asterisk server",
            ["server"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.ami_connects = Counter(
            "cloudpbx_ami_connects",
            "AMI logins (a rising rate: the connection keeps dropping)",
            ["server"],
            registry=registry,
        )
        self.ami_dropped = Counter(
            "cloudpbx_ami_dropped_events",
            "AMI events that named no PBX of the server (a tenant rule is missing)",
            ["server", "event"],
            registry=registry,
        )

        self.sms_outbox = Gauge(
            "cloudpbx_sms_outbox_messages",
            "SMS messages their gateway does not have yet (pending, or unsure: resubmitted)",
            ["state"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.sms_outbox_age = Gauge(
            "cloudpbx_sms_outbox_oldest_age_seconds",
            "Age of the oldest SMS its gateway does not have yet (0: none)",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.sms_gateways = Gauge(
            "cloudpbx_sms_gateways",
            "SMS gateways by status: ok, held (an account error), alert (operator action)",
            ["status"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.transcription_jobs = Gauge(
            "cloudpbx_transcription_jobs",
            "Transcription jobs waiting (queued) or being worked on (running)",
            ["status"],
            registry=registry,
            multiprocess_mode="livemax",
        )

        self.http_latency = Histogram(
            "cloudpbx_http_request_duration_seconds",
            "HTTP requests by route template, method and status class",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def exposition(self) -> bytes:
        """The text format of every metric (of every live or finished process)."""
        if self.registry is not None:
            return generate_latest(self.registry)
        assert self.folder is not None
        self.reap_dead_processes()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(self.folder))  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def reap_dead_processes(self) -> None:
        """Drop the live gauges of processes that no longer exist (see the module doc)."""
        assert self.folder is not None
        pids = {
            int(match.group(1))
            for path in self.folder.glob("gauge_live*.db")
            if (match := _LIVE_GAUGE_FILE.fullmatch(path.name))
        }
        for pid in pids - {os.getpid()}:
            if not _alive(pid):
                _forget(pid, self.folder)

    def close(self) -> None:
        """This process stops: its live gauges stop counting."""
        if self.folder is not None:
            _forget(os.getpid(), self.folder)


def _forget(pid: int, folder: Path) -> None:
    multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
