"""The database archive of the event engine's messages (PostgreSQL; docs/operations.md).

The engine keeps a short history per PBX; the archive keeps the newest `ws_history_size`
rows per PBX in the `event` table, which the single-process hub also reads, so a resume
older than the engine's history is still served, and so is a later single-process run.
What a single-process run stored in its own form is taken into it at start-up. Archiving also
raises `pbx.event_id_reserved` to the newest archived id: whatever hands out ids next (the
engine after losing its storage, or the single-process hub) starts above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.ports.bus import WireMessage
from cloudpbx.storage.tables import event, event_chunk, event_log, pbx
from cloudpbx.storage.tenants import utcnow


@dataclass(frozen=True, slots=True)
class ArchiveBounds:
    """Oldest and newest archived id of a PBX (0 when none) and how many rows it has."""

    oldest: int
    newest: int
    count: int


class EventArchive:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def adopt_single_process_history(self) -> int:
        """Take what the single-process hub stored (its log and per-PBX chunks,
        storage/events.py) into the archive's rows, so that a resume after switching to
        the engine finds it; returns how many messages were taken. Once, at start-up."""
        taken = 0
        async with self._engine.begin() as conn:
            logged = (await conn.execute(select(event_log.c.data))).scalars().all()
            chunks = (await conn.execute(select(event_chunk.c.pbx_id, event_chunk.c.data))).all()
            rows = [
                {"pbx_id": p, "id": i, "data": d}
                for data in logged
                for p, i, d in orjson.loads(data)
            ]
            rows += [
                {"pbx_id": chunk.pbx_id, "id": i, "data": d}
                for chunk in chunks
                for i, d in orjson.loads(chunk.data)
            ]
            if rows:
                now = utcnow()
                known = set((await conn.execute(select(pbx.c.id))).scalars().all())
                rows = [{**row, "created_at": now} for row in rows if row["pbx_id"] in known]
                if rows:
                    await conn.execute(insert(event).on_conflict_do_nothing(), rows)
                taken = len(rows)
            await conn.execute(delete(event_log))
            await conn.execute(delete(event_chunk))
        return taken

    async def id_floor(self) -> int:
        """The highest event id any PBX ever handed out or stored."""
        async with self._engine.connect() as conn:
            reserved = (await conn.execute(select(func.max(pbx.c.event_id_reserved)))).scalar()
            stored = (await conn.execute(select(func.max(event.c.id)))).scalar()
        return max(int(reserved or 0), int(stored or 0))

    async def write(self, pbx_id: int, messages: Sequence[WireMessage]) -> None:
        """Archive one PBX's messages (idempotent: a row already there is kept)."""
        if not messages:
            return
        now = utcnow()
        rows = [{"pbx_id": pbx_id, "id": m.id, "data": m.data, "created_at": now} for m in messages]
        newest = max(m.id for m in messages)
        async with self._engine.begin() as conn:
            await conn.execute(insert(event).on_conflict_do_nothing(), rows)
            await conn.execute(
                update(pbx)
                .where(pbx.c.id == pbx_id, pbx.c.event_id_reserved < newest)
                .values(event_id_reserved=newest)
            )

    async def after(self, pbx_id: int, after_id: int, before_id: int | None) -> list[WireMessage]:
        """Archived messages with after_id < id < before_id, oldest first."""
        query = select(event.c.id, event.c.data).where(
            event.c.pbx_id == pbx_id, event.c.id > after_id
        )
        if before_id is not None:
            query = query.where(event.c.id < before_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(event.c.id))).all()
        return [WireMessage(int(r.id), str(r.data)) for r in rows]

    async def bounds(self, pbx_id: int) -> ArchiveBounds:
        query = select(func.min(event.c.id), func.max(event.c.id), func.count()).where(
            event.c.pbx_id == pbx_id
        )
        async with self._engine.connect() as conn:
            oldest, newest, count = (await conn.execute(query)).one()
        return ArchiveBounds(int(oldest or 0), int(newest or 0), int(count))

    async def prune(self, pbx_id: int, keep: int) -> int:
        """Keep the newest `keep` rows of the PBX; returns how many went."""
        cutoff = (
            select(event.c.id)
            .where(event.c.pbx_id == pbx_id)
            .order_by(event.c.id.desc())
            .offset(keep - 1)
            .limit(1)
            .scalar_subquery()
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(event).where(event.c.pbx_id == pbx_id, event.c.id < cutoff)
            )
        return int(result.rowcount or 0)
