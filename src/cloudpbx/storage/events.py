"""The persisted WebSocket history: every message sent on a PBX's channel, by id."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.ports.bus import WireMessage
from cloudpbx.storage.tables import event, pbx
from cloudpbx.storage.tenants import utcnow


class EventStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, batch: Sequence[tuple[int, WireMessage]]) -> None:
        """Store (pbx_id, message) pairs in one transaction."""
        if not batch:
            return
        now = utcnow()
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(event),
                [{"pbx_id": p, "id": m.id, "data": m.data, "created_at": now} for p, m in batch],
            )

    async def latest(self, pbx_id: int, limit: int) -> list[WireMessage]:
        """The newest `limit` messages of a PBX, oldest first."""
        query = (
            select(event.c.id, event.c.data)
            .where(event.c.pbx_id == pbx_id)
            .order_by(event.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [WireMessage(int(r.id), str(r.data)) for r in reversed(rows)]

    async def reserved_up_to(self, pbx_id: int) -> int:
        """The highest event id ever handed out for the PBX (its reserved blocks' end)."""
        query = select(pbx.c.event_id_reserved).where(pbx.c.id == pbx_id)
        async with self._engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return int(value or 0)

    async def prune(self, pbx_id: int, keep_after_id: int) -> int:
        """Drop messages with id ≤ keep_after_id; returns how many went."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(event).where(event.c.pbx_id == pbx_id, event.c.id <= keep_after_id)
            )
        return int(result.rowcount or 0)
