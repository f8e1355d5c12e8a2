"""The context every script runs in: engine, state, randomness, clock and outbox.

Scripts never await anything: they change the state and append what happened to the
outbox (events of one change, finished calls). Whoever drives the engine drains the
outbox after each step — the live backend delivers it to the sink, the backfill keeps
only the call records.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from cloudpbx.adapters.simulator.cdr import CallLog, Channel, ChannelCounter, open_channel
from cloudpbx.adapters.simulator.engine import Engine, Script
from cloudpbx.adapters.simulator.model import PbxConfig
from cloudpbx.adapters.simulator.state import PbxState
from cloudpbx.domain.events import Event
from cloudpbx.domain.records import CdrRecord
from cloudpbx.domain.states import Disposition


class CallKind(Enum):
    """What a conversation was about, which decides the dialogue written for it."""

    QUEUE = "queue"
    INTERNAL = "internal"
    OUTBOUND = "outbound"
    INBOUND = "inbound"
    CONFERENCE = "conference"


@dataclass(frozen=True, slots=True)
class Speaker:
    """One side of a conversation; `external` speakers are not on the PBX."""

    name: str
    number: str
    female: bool
    external: bool


@dataclass(frozen=True, slots=True)
class Talk:
    """Who talked in an answered call, and where (`topic` is the queue or room name)."""

    kind: CallKind
    host: Speaker
    guest: Speaker
    topic: str = ""


@dataclass(frozen=True, slots=True)
class Emitted:
    """The events of one change."""

    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    """A call ended; `talk` is set when it was answered and chosen to be recorded."""

    record: CdrRecord
    talk: Talk | None


Output = Emitted | Finished


class Sim:
    """One PBX's simulation: shared by all its scripts."""

    def __init__(
        self,
        config: PbxConfig,
        counter: ChannelCounter,
        rng: random.Random,
        *,
        clock: Callable[[], datetime] | None = None,
        origin: datetime | None = None,
        record_share: float = 1.0,
    ) -> None:
        """`clock` gives wall time (live); `origin` maps virtual time onto dates (history).

        `record_share` is the fraction of answered calls to record, drawn from a generator
        of its own so that changing it never changes the sequence of calls.
        """
        if (clock is None) == (origin is None):
            raise ValueError("give exactly one of clock and origin")
        self.config = config
        self.state = PbxState(config)
        self.engine = Engine()
        self.rng = rng
        self.outbox: list[Output] = []
        self._counter = counter
        self._clock = clock
        self._origin = origin
        self._record_share = record_share
        self._sampler = random.Random(rng.getrandbits(64))

    @property
    def t(self) -> float:
        """Virtual seconds since the simulation began."""
        return self.engine.now

    def now(self) -> datetime:
        """The date and time of the current step."""
        if self._origin is not None:
            return self._origin + timedelta(seconds=self.engine.now)
        assert self._clock is not None
        return self._clock()

    def spawn(self, script: Script, delay: float = 0.0) -> None:
        self.engine.spawn(script, delay)

    def emit(self, events: Sequence[Event]) -> None:
        """Record the events of one change (nothing when the change was invisible)."""
        if events:
            self.outbox.append(Emitted(tuple(events)))

    def channel(self, endpoint: str) -> Channel:
        return open_channel(self._counter, endpoint, self.now())

    def finish(self, log: CallLog, disposition: Disposition, talk: Talk | None = None) -> None:
        """Close a call's record; answered calls are sampled for recording."""
        record = log.finish(self.t, disposition)
        if talk is not None and (
            disposition is not Disposition.ANSWERED or self._sampler.random() >= self._record_share
        ):
            talk = None
        self.outbox.append(Finished(record, talk))

    def drain(self) -> list[Output]:
        """Take everything that happened since the last drain."""
        out, self.outbox = self.outbox, []
        return out
