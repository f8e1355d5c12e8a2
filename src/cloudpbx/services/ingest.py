"""What backends deliver (events, CDRs, recordings, transcriptions) lands here.

Implements the PbxSink port: resolves the PBX by name, stores, publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cloudpbx.domain.events import Event
from cloudpbx.domain.records import CdrRecord, RecordingInfo, TranscriptionRecord
from cloudpbx.services.stream import EventStream
from cloudpbx.services.transcription import TranscriptionQueue
from cloudpbx.storage.calls import CallStore
from cloudpbx.storage.tenants import Tenant, TenantStore, validate_pbx_name

log = logging.getLogger(__name__)


class PbxIngest:
    """The PbxSink every backend writes to."""

    def __init__(
        self, tenants: TenantStore, calls: CallStore, hub: EventStream, recordings_root: Path
    ) -> None:
        self._tenants = tenants
        self._calls = calls
        self._hub = hub
        self._recordings_root = recordings_root
        self._cache: dict[str, Tenant] = {}
        # Set by the runtime: queues a transcription job for each new recording.
        self.transcription_queue: TranscriptionQueue | None = None

    async def tenant(self, pbx: str) -> Tenant:
        tenant = self._cache.get(pbx)
        if tenant is None:
            tenant = await self._tenants.require(pbx)
            self._cache[pbx] = tenant
        return tenant

    async def events(self, pbx: str, events: Sequence[Event]) -> None:
        await self._hub.publish(await self.tenant(pbx), events)

    async def cdr(self, pbx: str, record: CdrRecord) -> None:
        await self._calls.add_cdrs(await self.tenant(pbx), [record])

    async def cdrs(self, pbx: str, records: Sequence[CdrRecord]) -> None:
        """Many rows in one transaction (history backfill, catch-up imports)."""
        await self._calls.add_cdrs(await self.tenant(pbx), records)

    async def recording(self, pbx: str, info: RecordingInfo) -> None:
        tenant = await self.tenant(pbx)
        if not await self._calls.add_recording(tenant, info):
            log.info("recording of %s on %s already stored; kept the first", info.uniqueid, pbx)
        elif self.transcription_queue is not None:
            await self.transcription_queue.recording_stored(tenant, info)

    async def transcription(self, pbx: str, record: TranscriptionRecord) -> None:
        tenant = await self.tenant(pbx)
        await self._calls.add_transcription(tenant, record)
        if self.transcription_queue is not None:
            await self.transcription_queue.transcript_supplied(tenant, record.uniqueid)

    def recordings_dir(self, pbx: str) -> Path:
        folder = self._recordings_root / validate_pbx_name(pbx)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
