"""`cloudpbx serve --workers N`: N server processes on one port.

The parent binds one listening socket per worker slot, all on the port with SO_REUSEPORT,
and keeps them open; worker `i` runs the normal `server.serve` on socket `i`. The kernel
spreads new connections evenly over the sockets (measured, 2 workers, 400 connections
opened at once: 47-50 % each; one socket shared by all workers gave 28-41 %, since an
event loop that wakes first accepts a whole burst, and a WebSocket stays where it landed).
Because the parent holds the sockets, a worker that dies loses nothing: connections
queued on its socket wait there for its replacement, and the port is never free for
another program. The cost: while a slot's worker restarts, the connections the kernel
hashes to it wait for it (up to 4.6 s measured here: a new worker's start) rather than
going to another worker; a worker that cannot start at all leaves its share waiting.

The parent does no serving; it migrates the database once, restarts a worker that exits,
and on SIGTERM or SIGINT passes SIGTERM to every worker and waits for their clean stop
(WebSockets closed with 1012, leases released), killing what is left after `STOP_TIMEOUT`.

Workers run in their own process group (a terminal's Ctrl-C reaches the parent only,
which forwards one SIGTERM) and die with the parent (PR_SET_PDEATHSIG), so a parent
killed -9 leaves no worker behind holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from sqlalchemy.engine import make_url

from cloudpbx.metrics.registry import mark_process_dead
from cloudpbx.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0
"""Seconds the workers get to stop cleanly before they are killed."""
RESTART_DELAY = 1.0
"""A worker that dies within this many seconds of its start is restarted after this delay
(a worker that cannot start at all must not spin)."""
_PR_SET_PDEATHSIG = 1


class WorkersRefused(ValueError):
    """`--workers N` with N > 1 on a configuration that cannot share state across processes."""


def scale_out_problems(settings: Settings) -> list[str]:
    """What N > 1 processes need and `settings` lacks; [] when nothing."""
    problems: list[str] = []
    if make_url(settings.effective_database_url).get_backend_name() != "postgresql":
        problems.append("PostgreSQL (database_url = postgresql://...): SQLite serves one process")
    if not settings.event_engine_url:
        problems.append(
            "an event engine (event_engine_url): without one, a WebSocket client sees only "
            "the events of the process it is connected to"
        )
    return problems


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port (port 0: the one the first gets)."""
    sockets = [_reuseport_socket(host, port)]
    port = sockets[0].getsockname()[1]
    try:
        for _ in range(count - 1):
            sockets.append(_reuseport_socket(host, port))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def run_workers(settings: Settings) -> None:
    """Serve with `settings.workers` processes until SIGTERM/SIGINT (see the module docstring)."""
    problems = scale_out_problems(settings)
    if problems:
        raise WorkersRefused(f"--workers {settings.workers} needs " + " and ".join(problems))
    asyncio.run(_migrate(settings))
    # prometheus-client's multi-process mode: every worker writes its samples under this
    # folder; a fresh one per start, so the files of an earlier run are never summed in.
    metrics_dir = tempfile.mkdtemp(prefix="cloudpbx-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    sockets = bind_sockets(settings.host, settings.port, settings.workers)
    try:
        Supervisor(settings, sockets).run()
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _migrate(settings: Settings) -> None:
    """Once, here: N workers migrating the same database at once would race."""
    from cloudpbx.runtime import build_runtime

    runtime = build_runtime(settings)
    try:
        await runtime.migrate()
    finally:
        await runtime.engine.dispose()


class Supervisor:
    """The parent: starts, restarts and stops the workers."""

    def __init__(self, settings: Settings, sockets: list[socket.socket]) -> None:
        self.settings = settings
        self.sockets = sockets
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess | None] = [None] * settings.workers
        self._started_at: list[float] = [0.0] * settings.workers
        self._stopping = False

    def run(self) -> None:
        previous = {
            sig: signal.signal(sig, self._stop_requested) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        host, port = self.sockets[0].getsockname()[:2]
        log.info(
            "serving on %s:%d with %d worker processes (supervisor pid %d)",
            host,
            port,
            len(self._workers),
            os.getpid(),
        )
        try:
            for index in range(len(self._workers)):
                self._start(index)
            while not self._stopping:
                self._reap_and_restart()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_requested(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("%s: stopping the workers", signal.Signals(signum).name)
        self._stopping = True

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(self.settings, self.sockets[index], index, os.getpid()),
            name=f"cloudpbx-worker-{index}",
        )
        process.start()
        self._workers[index] = process
        self._started_at[index] = time.monotonic()
        log.info("worker %d started (pid %s)", index, process.pid)

    def _reap_and_restart(self) -> None:
        live = {p.sentinel: (i, p) for i, p in enumerate(self._workers) if p is not None}
        for sentinel in wait(list(live), timeout=0.5):
            index, process = live[sentinel]  # type: ignore[index]
            process.join()
            self._workers[index] = None
            if process.pid is not None:
                mark_process_dead(process.pid)  # its live gauges stop counting in /metrics
            if self._stopping:
                continue
            log.error(
                "worker %d (pid %s) exited with %s; restarting it",
                index,
                process.pid,
                _exit_text(process.exitcode),
            )
            if time.monotonic() - self._started_at[index] < RESTART_DELAY:
                time.sleep(RESTART_DELAY)
            if not self._stopping:
                self._start(index)

    def _stop_all(self) -> None:
        running = [p for p in self._workers if p is not None and p.is_alive()]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %s did not stop in %.0f s: killed", process.pid, STOP_TIMEOUT)
                process.kill()
                process.join()
        log.info("all workers stopped")


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return f"status {code}"


def _worker_main(settings: Settings, sock: socket.socket, index: int, parent: int) -> None:
    """A worker process: the normal server on the inherited socket."""
    os.setpgrp()
    _die_with_parent(parent)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from cloudpbx.server import serve

    asyncio.run(serve(settings, sock=sock))


def _die_with_parent(parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
