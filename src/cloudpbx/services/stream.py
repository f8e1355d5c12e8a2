"""What the rest of the server needs from a PBX event stream, whichever hub runs it:
`EventHub` (one process, ids from the database) or `EngineHub` (many processes, ids and
order from the event engine)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from cloudpbx.domain.events import Event, group_into_texts
from cloudpbx.ports.bus import EventBus, WireMessage
from cloudpbx.services.events import Replay
from cloudpbx.storage.tenants import Tenant


class EventStream(Protocol):
    @property
    def bus(self) -> EventBus: ...

    async def publish(self, tenant: Tenant, events: Sequence[Event]) -> Sequence[WireMessage]:
        """Queue the events of one change; clients get them once stored."""
        ...

    async def replay_after(self, tenant: Tenant, last_id: int) -> Replay: ...

    async def last_id(self, tenant: Tenant) -> int: ...

    async def flush(self) -> bool: ...

    async def close(self) -> None: ...


def texts_of(events: Sequence[Event], bundle: bool) -> list[dict[str, Any]]:
    """One event per `text` (the default), or bundled when the server is set to."""
    if bundle:
        return group_into_texts(events)
    return [{event.event_type: event.payload()} for event in events]
