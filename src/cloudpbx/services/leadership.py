"""`Leadership`: run a singleton job (an Asterisk server's AMI connector) only while this
process holds its lease, across every process and machine on one database.

A standby tries to take the lease every `ttl/3`; a leader renews it every `ttl/3`. The
leader's own deadline is `ttl` after it SENT its last successful acquire/renew, which is
before the database's expiry (that starts when the statement runs), so a leader gives up
before anyone else can be granted the lease. Giving up is immediate: `holds()` turns
false the moment the deadline passes (it reads the monotonic clock, which keeps running
while a process is stopped), and a timer then stops the job. A process that wakes from a
pause (SIGSTOP, a frozen VM) past its deadline therefore sees `holds()` false before it
acts: the job checks `holds()` before every side effect (docs/operations.md, "Leases").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

from cloudpbx.ports.lease import LeaseStore, OnGain, OnLoss, Term

log = logging.getLogger(__name__)


def holder_id() -> str:
    """This process, unique even when a pid is reused: `host:pid:random`."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


class Leadership:
    """One lease, and the job it guards: `on_gain(term)` starts the job, `on_loss(why)`
    stops it (see the module docstring)."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        holder: str,
        ttl: float,
        on_gain: OnGain,
        on_loss: OnLoss,
    ) -> None:
        self.store = store
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self._on_gain = on_gain
        self._on_loss = on_loss
        self.term: Term | None = None
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._losing: asyncio.Task[None] | None = None
        self.terms = 0

    @property
    def state(self) -> str:
        return "leader" if self.holds() else "standby"

    def holds(self) -> bool:
        """Whether this process may act for the lease now (its term is within its deadline)."""
        return self.term is not None and asyncio.get_running_loop().time() < self._deadline

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"lease-{self.name}")

    async def stop(self) -> None:
        """Stop the job if it runs, then release the lease so a standby takes over now."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._losing is not None:
            await asyncio.gather(self._losing, return_exceptions=True)
        term = self.term
        if term is not None:
            await self._lose("stopping")
            try:
                await self.store.release(term)
            except Exception as exc:  # it then expires after ttl: slower, not wrong
                log.warning("lease %s not released (%s); it expires by itself", self.name, exc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sent = loop.time()
            if self.term is None:
                if self._losing is None:  # the job of the last term is still stopping
                    await self._try_acquire(sent)
            else:
                await self._try_renew(self.term, sent)
            await asyncio.sleep(self.ttl / 3)

    async def _try_acquire(self, sent: float) -> None:
        try:
            term = await asyncio.wait_for(
                self.store.acquire(self.name, self.holder, self.ttl), self.ttl / 3
            )
        except Exception as exc:
            log.warning("lease %s: acquire failed (%s)", self.name, exc)
            return
        if term is None or asyncio.get_running_loop().time() >= sent + self.ttl:
            return  # held elsewhere, or granted too late to be ours safely: it will expire
        self.term = term
        self.terms += 1
        self._extend(sent)
        log.info("lease %s taken (token %d): this process is active", self.name, term.token)
        try:
            await self._on_gain(term)
        except Exception:
            log.exception("lease %s: starting the job failed; giving the lease back", self.name)
            await self._lose("the job failed to start")
            with contextlib.suppress(Exception):
                await self.store.release(term)

    async def _try_renew(self, term: Term, sent: float) -> None:
        left = self._deadline - asyncio.get_running_loop().time()
        try:
            renewed = await asyncio.wait_for(self.store.renew(term, self.ttl), max(left, 0.001))
        except Exception as exc:  # TimeoutError included: the deadline decides
            log.warning("lease %s: renewal failed (%s), retrying", self.name, exc)
            return
        if self.term is not term:
            return  # the deadline passed while the renewal was on its way
        if renewed:
            self._extend(sent)
        else:
            await self._lose(f"renewal of token {term.token} refused: the term is over")

    def _extend(self, sent: float) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = sent + self.ttl
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = loop.call_at(self._deadline, self._expired)

    def _expired(self) -> None:
        if self.term is not None and self._losing is None:
            self._losing = asyncio.create_task(self._lose("not renewed before its deadline"))

    async def _lose(self, why: str) -> None:
        term, self.term = self.term, None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if term is None:
            return
        log.warning("lease %s lost (token %d): %s; standing by", self.name, term.token, why)
        try:
            await self._on_loss(why)
        finally:
            self._losing = None
