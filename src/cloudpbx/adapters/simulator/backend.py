"""The embedded PBX: a living virtual PBX per name, driven in real time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cloudpbx.adapters.simulator.backfill import HistorySink, backfill
from cloudpbx.adapters.simulator.calls import originate
from cloudpbx.adapters.simulator.cdr import ChannelCounter
from cloudpbx.adapters.simulator.engine import Script
from cloudpbx.adapters.simulator.model import Destination, PbxConfig, default_config
from cloudpbx.adapters.simulator.recorder import Recorder
from cloudpbx.adapters.simulator.sim import Emitted, Output, Sim
from cloudpbx.adapters.simulator.state import PbxState
from cloudpbx.adapters.simulator.traffic import office
from cloudpbx.domain.events import Event
from cloudpbx.ports.pbx import OriginateResult, PbxSink

log = logging.getLogger(__name__)

_YIELD_EVERY = 100
"""Steps run back to back (when behind schedule) before letting other tasks in."""

_COMPLAIN_EVERY = 60.0
"""Seconds between two logged sink failures of one PBX."""


class SimulatorBackend:
    """A virtual PBX for each name in `pbxes`, implementing the PbxBackend port.

    Each PBX has extensions 101–110, queues Kolejka1 (500, ring-all) and Kolejka2 (501,
    round robin) with static and dynamic agents, the conference room SesjaRady (600) and
    a trunk to the outside. Phones go offline and back, turn do-not-disturb on and off,
    agents pause with reasons; calls are internal, outgoing (rated), incoming direct or
    through a queue, conference visits; some are busy, unanswered or fail.

    Parameters:
        seed: the same seed gives the same sequence of scenarios (per PBX name); None
            draws a fresh one.
        rate: new calls per real second per PBX. Presence changes (pauses,
            do-not-disturb, phones going offline) come at their own pace of about 20 an
            hour, compressed by `speed`. 0: nothing happens but `/dial` calls.
        speed: time compression of call phases (ringing, talk, pauses are divided by it).
            CDR durations stay the call's own virtual seconds, `calldate` is the wall
            clock at the call's start. For benchmarks raise speed with rate, or most
            calls meet busy phones and full queues.
        backfill_days: how many days `backfill` fills.
        recordings: whether answered calls are recorded at all.
        recordings_per_minute: the recording budget. Every answered call is recorded
            with probability min(1, budget / (60 × rate)), so on average at most that
            many files a minute are written whatever the rate (default 2 × 20 s, under
            40 MB an hour); at slow rates every answered call is recorded. None records
            every answered call.
        recording_seconds: a recording file holds at most this many seconds of the
            call (its transcription covers the whole call).
        backfill_recordings: how many history calls get a recording (10 s each).
        timezone: the default zone of the history's office hours.
        clock: wall time (aware datetimes); defaults to the system clock in UTC.

    Live calls in progress when `stop` is called are dropped without a CDR, as if the PBX
    had been switched off. The channel counter (and so uniqueids) continues across
    restarts of the same backend and is shared with the history.
    """

    def __init__(
        self,
        pbxes: Sequence[str],
        *,
        seed: int | None = None,
        rate: float = 0.5,
        speed: float = 1.0,
        backfill_days: int = 7,
        recordings: bool = True,
        recordings_per_minute: float | None = 2.0,
        recording_seconds: float = 20.0,
        backfill_recordings: int = 50,
        timezone: str = "Europe/Warsaw",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        if speed <= 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a finite number > 0, got {speed}")
        self._configs: dict[str, PbxConfig] = {pbx: default_config(pbx) for pbx in pbxes}
        self._counters = {pbx: ChannelCounter() for pbx in pbxes}
        self._seed = seed
        self._rate = rate
        self._speed = speed
        self._backfill_days = backfill_days
        self._record_share = _record_share(recordings, recordings_per_minute, rate)
        self._recording_seconds = recording_seconds
        self._backfill_recordings = backfill_recordings if recordings else 0
        self._timezone = timezone
        self._clock = clock or (lambda: datetime.now(UTC))
        self._runs: dict[str, _LiveRun] = {}
        self._references = itertools.count(1)

    # -- PbxBackend ------------------------------------------------------------------------

    def serves(self, pbx: str) -> bool:
        return pbx in self._configs

    def is_extension(self, pbx: str, number: str) -> bool:
        config = self._configs.get(pbx)
        return config is not None and config.extension(number) is not None

    async def start(self, sink: PbxSink) -> None:
        """Start every PBX afresh (state and scenario sequence from the seed).

        Each PBX first publishes its whole state at rest, as the Asterisk backend does on
        connect: a (re)started simulator begins with every phone idle, whatever its
        clients last saw (calls in progress vanished with the old process), so a client
        that resumes, or a panel replaying the history, ends where the PBX really is.
        """
        if self._runs:
            raise RuntimeError("the simulator is already running")
        for pbx, config in self._configs.items():
            rng = random.Random(self._stream(pbx, "live"))
            sim = Sim(
                config,
                self._counters[pbx],
                rng,
                clock=self._clock,
                record_share=self._record_share,
            )
            if self._rate > 0:
                office(sim, self._rate / self._speed)
            recorder = Recorder(random.Random(self._stream(pbx, "media")), self._recording_seconds)
            self._runs[pbx] = _LiveRun(pbx, sim, sink, recorder, self._speed)
        for run in self._runs.values():
            run.sim.emit(run.sim.state.snapshot())  # delivered first, like any change
            run.start()

    async def stop(self) -> None:
        """Cancel every PBX's driver and wait for it; nothing is delivered afterwards."""
        runs, self._runs = self._runs, {}
        for run in runs.values():
            run.cancel()
        for run in runs.values():
            await run.wait()

    async def originate(self, pbx: str, cpa: str, cpb: str) -> OriginateResult:
        """Ring `cpa`, then call `cpb`: accepted when `cpa` is a free, registered phone."""
        config = self._configs.get(pbx)
        if config is None:
            return OriginateResult(False, message=f"PBX {pbx} is not simulated here")
        run = self._runs.get(pbx)
        if run is None:
            return OriginateResult(False, message="the PBX simulator is not running")
        phone = run.sim.state.phones.get(cpa)
        if phone is None:
            return OriginateResult(False, message=f"Extension {cpa} does not exist")
        if not phone.registered:
            return OriginateResult(False, message=f"Extension {cpa} is not registered")
        if not phone.free:
            return OriginateResult(False, message=f"Extension {cpa} is busy")
        if config.destination(cpb) is Destination.INVALID:
            return OriginateResult(False, message=f"{cpb!r} is not a number")
        run.inject(originate(run.sim, phone, cpb))
        return OriginateResult(True, reference=f"originate-{next(self._references)}")

    # -- beyond the port -------------------------------------------------------------------

    def snapshot(self, pbx: str) -> list[Event]:
        """Every phone, queue, agent and conference participant as it is now.

        Before `start` (and after `stop`) that is the PBX at rest: all phones idle.
        """
        run = self._runs.get(pbx)
        if run is not None:
            return run.sim.state.snapshot()
        return PbxState(self._configs[pbx]).snapshot()

    async def backfill(self, sink: HistorySink, pbx: str, *, timezone: str | None = None) -> int:
        """Fill the last `backfill_days` of history; returns the number of CDR rows.

        Meant for a PBX without any CDR yet (the caller checks); no events are published.
        `timezone` (the tenant's zone) places the office hours; default: the backend's.
        """
        return await backfill(
            sink,
            pbx,
            days=self._backfill_days,
            now=self._clock(),
            rng=random.Random(self._stream(pbx, "history")),
            config=self._configs[pbx],
            counter=self._counters[pbx],
            timezone=timezone or self._timezone,
            recordings=self._backfill_recordings,
        )

    def _stream(self, pbx: str, purpose: str) -> str | None:
        """A seed for one independent random stream (None: unseeded)."""
        return None if self._seed is None else f"{self._seed}:{pbx}:{purpose}"


def _record_share(recordings: bool, per_minute: float | None, rate: float) -> float:
    if not recordings:
        return 0.0
    if per_minute is None or rate == 0:
        return 1.0
    return min(1.0, per_minute / 60.0 / rate)


class _LiveRun:
    """Drives one PBX's engine against the wall clock and delivers what happens."""

    def __init__(self, pbx: str, sim: Sim, sink: PbxSink, recorder: Recorder, speed: float) -> None:
        self.pbx = pbx
        self.sim = sim
        self._sink = sink
        self._recorder = recorder
        self._speed = speed
        self._wake = asyncio.Event()
        self._started = 0.0
        self._task: asyncio.Task[None] | None = None
        self._complained_at = -math.inf
        self._hushed = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._task = loop.create_task(self._drive(), name=f"simulator-{self.pbx}")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.wait({self._task})
        self.sim.engine.close()

    def inject(self, script: Script) -> None:
        """Run `script` from the current moment on (a `/dial`); its first step runs now."""
        now = (asyncio.get_running_loop().time() - self._started) * self._speed
        self.sim.engine.run_now(script, now)
        self._wake.set()

    async def _drive(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the simulator of %s stopped", self.pbx)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        engine = self.sim.engine
        steps = 0
        while True:
            if self.sim.outbox:
                await self._deliver(self.sim.drain())
            due = engine.next_due()
            delay = None if due is None else self._started + due / self._speed - loop.time()
            if delay is not None and delay <= 0:
                engine.step()
                steps += 1
                if steps % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _deliver(self, outputs: list[Output]) -> None:
        for out in outputs:
            try:
                if isinstance(out, Emitted):
                    await self._sink.events(self.pbx, out.events)
                    continue
                await self._sink.cdr(self.pbx, out.record)
                if out.talk is not None:
                    await self._recorder.store(self._sink, self.pbx, out.record, out.talk)
            except Exception:
                self._complain()

    def _complain(self) -> None:
        """Log a sink failure with its traceback, at most once a minute (a broken database
        must not turn hundreds of calls a second into hundreds of tracebacks)."""
        now = time.monotonic()
        if now - self._complained_at < _COMPLAIN_EVERY:
            self._hushed += 1
            return
        log.exception(
            "the sink refused what happened on %s (%d more failures not logged)",
            self.pbx,
            self._hushed,
        )
        self._complained_at, self._hushed = now, 0
