"""The persisted WebSocket history: every message sent on a PBX's channel, by id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.ports.bus import WireMessage
from cloudpbx.storage.tables import event, pbx
from cloudpbx.storage.tenants import utcnow

_APPEND_COLUMNS = ("pbx_id", "id", "data", "created_at")


class EventStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._append_sql: str | None = None

    async def append(self, batch: Sequence[tuple[int, WireMessage]]) -> None:
        """Store (pbx_id, message) pairs in one transaction.

        One statement compiled once and the driver's own `executemany` over plain tuples:
        with one client per PBX every WebSocket delivery is a row here, and SQLAlchemy's
        per-row parameter handling (a dict, a type conversion of the same `created_at`)
        cost more than the row's insert itself.
        """
        if not batch:
            return
        async with self._engine.begin() as conn:
            dialect = conn.dialect
            sql = self._append_sql or self._compile_append(dialect)
            now = _bind(dialect, utcnow())
            await conn.exec_driver_sql(sql, [(p, m.id, m.data, now) for p, m in batch])

    def _compile_append(self, dialect: Dialect) -> str:
        compiled = insert(event).compile(dialect=dialect, column_keys=list(_APPEND_COLUMNS))
        if tuple(compiled.positiontup or ()) != _APPEND_COLUMNS:
            raise RuntimeError(f"{dialect.name}: the event INSERT does not take positional rows")
        self._append_sql = compiled.string
        return compiled.string

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


def _bind(dialect: Dialect, value: datetime) -> object:
    """`created_at` as the driver takes it (SQLite: SQLAlchemy's text form), converted
    once per batch instead of once per row."""
    process = event.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process else value
