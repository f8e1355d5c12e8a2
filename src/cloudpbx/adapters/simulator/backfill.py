"""A realistic history for a fresh PBX: the calls of the last days, so every list has data.

The same scripts as the live PBX run over the past `days` in virtual time (a week takes
well under a second), with arrivals following office hours in the PBX's time zone: busy
on working days 8–17, quiet at night and at weekends, a few hundred calls a working day.
Only calls that ended before `now` are kept; no WebSocket event is published (history
is not news). Rows go to the sink in batches; a bounded number of answered calls, picked
at random across the period, and the last few before `now`, get a short recording and a
transcription.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from cloudpbx.adapters.simulator.cdr import ChannelCounter
from cloudpbx.adapters.simulator.model import PbxConfig, default_config
from cloudpbx.adapters.simulator.recorder import Recorder
from cloudpbx.adapters.simulator.sim import Finished, Sim
from cloudpbx.adapters.simulator.traffic import office
from cloudpbx.domain.records import CdrRecord
from cloudpbx.ports.pbx import PbxSink

PEAK_CALLS_PER_HOUR = 40.0
"""Calls per hour at the busiest hours of a working day."""

_HOURLY = (
    (0.01,) * 7
    + (0.35, 0.8, 1.0, 1.0, 1.0, 1.0, 0.7, 1.0, 1.0, 1.0, 0.6, 0.25, 0.1, 0.05)
    + (0.02, 0.01, 0.01)
)
"""Share of the peak rate by local hour of a working day."""

RECENT_RECORDINGS = 5
"""The last answered calls before `now` are always recorded (besides the random ones), so
that today's `/record` and `/transcription`, the document's first examples, have rows
from the first start on."""

_WEEKEND = 0.12
_BATCH = 1000


class HistorySink(PbxSink, Protocol):
    """A sink that also takes many CDR rows at once (services.ingest.PbxIngest does)."""

    async def cdrs(self, pbx: str, records: Sequence[CdrRecord]) -> None:
        """Store many rows in one go."""
        ...


def office_hours(zone: ZoneInfo) -> Callable[[datetime], float]:
    """How busy the office is at a moment, 0..1 of the peak."""

    def intensity(moment: datetime) -> float:
        local = moment.astimezone(zone)
        share = _HOURLY[local.hour]
        return share * _WEEKEND if local.weekday() >= 5 else share

    return intensity


async def backfill(
    sink: HistorySink,
    pbx: str,
    *,
    days: int,
    now: datetime,
    rng: random.Random,
    config: PbxConfig | None = None,
    counter: ChannelCounter | None = None,
    timezone: str = "Europe/Warsaw",
    recordings: int = 50,
    recording_seconds: float = 10.0,
) -> int:
    """Deliver the calls of the `days` before `now`; returns how many CDR rows it stored.

    `counter` should be the live PBX's channel counter, so history and live calls never
    share a uniqueid.
    """
    if days <= 0:
        return 0
    sim = Sim(
        config or default_config(pbx),
        counter or ChannelCounter(),
        rng,
        origin=now - timedelta(days=days),
        record_share=1.0,
    )
    office(sim, PEAK_CALLS_PER_HOUR / 3600.0, office_hours(ZoneInfo(timezone)))
    finished: list[Finished] = []
    horizon = days * 86400.0
    hour = 0.0
    while hour < horizon:
        hour = min(hour + 3600.0, horizon)
        sim.engine.run_until(hour)
        finished += [out for out in sim.drain() if isinstance(out, Finished)]
        await asyncio.sleep(0)
    sim.engine.close()
    finished.sort(key=lambda out: out.record.started_at)
    records = [out.record for out in finished]
    for start in range(0, len(records), _BATCH):
        await sink.cdrs(pbx, records[start : start + _BATCH])
    talked = [out for out in finished if out.talk is not None]
    chosen = sorted(rng.sample(range(len(talked)), min(recordings, len(talked))))
    if recordings:
        chosen = sorted({*chosen, *range(max(0, len(talked) - RECENT_RECORDINGS), len(talked))})
    recorder = Recorder(random.Random(rng.getrandbits(64)), recording_seconds)
    for index in chosen:
        out = talked[index]
        assert out.talk is not None
        await recorder.store(sink, pbx, out.record, out.talk)
    return len(records)
