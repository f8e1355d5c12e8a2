"""The PBX backend port: events in, originate out, CDRs, recordings and transcriptions in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cloudpbx.domain.events import Event
from cloudpbx.domain.records import CdrRecord, RecordingInfo, TranscriptionRecord


@dataclass(frozen=True, slots=True)
class PbxInfo:
    """What a backend needs to know about a tenant PBX."""

    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """Whether the PBX accepted a `/dial`; `reference` names the attempt (e.g. ActionID)."""

    accepted: bool
    reference: str = ""
    message: str = ""


class PbxSink(Protocol):
    """Where a backend delivers what happens on a PBX. Implemented by services.ingest."""

    async def events(self, pbx: str, events: Sequence[Event]) -> None:
        """Events of one change, in causal order; published as few messages as allowed."""
        ...

    async def cdr(self, pbx: str, record: CdrRecord) -> None:
        """A finished call's billing record."""
        ...

    async def recording(self, pbx: str, info: RecordingInfo) -> None:
        """A recording file now complete under `recordings_dir(pbx)`."""
        ...

    async def transcription(self, pbx: str, record: TranscriptionRecord) -> None:
        """A finished transcription of a recorded call."""
        ...

    def recordings_dir(self, pbx: str) -> Path:
        """The folder where this PBX's recordings live (created on demand)."""
        ...


class PbxBackend(Protocol):
    """A source of PBX activity and the target of `/dial` for the PBXes it serves."""

    def serves(self, pbx: str) -> bool:
        """Whether this backend runs the named PBX."""
        ...

    async def start(self, sink: PbxSink) -> None:
        """Connect and begin delivering to `sink`; returns once started."""
        ...

    async def stop(self) -> None:
        """Stop cleanly; no delivery to the sink after it returns."""
        ...

    async def originate(self, pbx: str, cpa: str, cpb: str) -> OriginateResult:
        """Ring extension `cpa`; once it answers, call `cpb`."""
        ...

    def is_extension(self, pbx: str, number: str) -> bool:
        """Whether `number` is an extension of the PBX (a valid `cpa`)."""
        ...


@runtime_checkable
class ReportsHealth(Protocol):
    """A backend that can say whether it is connected (`{"status": "ok"|"degraded", ...}`)."""

    def health(self) -> dict[str, Any]: ...
