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

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.ports.bus import WireMessage
from cloudpbx.storage.tables import event, event_chunk, event_log, pbx
from cloudpbx.storage.tenants import utcnow

_ADOPT_SQL = (
    # Chunks hold [[id, data], ...] of one PBX; log rows [[pbx_id, id, data], ...] of many
    # (of PBXes that may be gone since: only existing ones are taken).
    "INSERT INTO event (pbx_id, id, data, created_at) "
    "SELECT c.pbx_id, (m ->> 0)::bigint, m ->> 1, now() AT TIME ZONE 'UTC' "
    "FROM event_chunk AS c, json_array_elements(c.data::json) AS m "
    "ON CONFLICT DO NOTHING",
    "INSERT INTO event (pbx_id, id, data, created_at) "
    "SELECT (m ->> 0)::integer, (m ->> 1)::bigint, m ->> 2, now() AT TIME ZONE 'UTC' "
    "FROM event_log AS l, json_array_elements(l.data::json) AS m "
    "WHERE (m ->> 0)::integer IN (SELECT id FROM pbx) "
    "ON CONFLICT DO NOTHING",
)


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
        the engine finds it; returns how many rows were added. Once, at start-up, in SQL:
        however long that history is, it never passes through this process's memory."""
        async with self._engine.begin() as conn:
            added = 0
            for statement in _ADOPT_SQL:
                added += int((await conn.exec_driver_sql(statement)).rowcount or 0)
            await conn.execute(delete(event_log))
            await conn.execute(delete(event_chunk))
        return added

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
