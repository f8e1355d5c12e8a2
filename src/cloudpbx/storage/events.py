"""The persisted WebSocket history of the in-process event hub: an append-only log, merged
into per-PBX chunks.

A group commit of the hub (services/events.py) holds messages of many PBXes. Stored as a
row per message under a (pbx_id, id) key, each row lands on its own page of that index
(the PBXes interleave): with thousands of PBXes every commit dirtied a page per message,
~9 µs of SQLite's CPU per message against ~1.5 µs for an append (bench `channels`,
docs/benchmarks.md). So a commit appends ONE `event_log` row (its messages, as JSON), and
every `merge_interval` seconds (or `merge_every` messages) `merge` moves the log into
`event_chunk`: one row per PBX holding all of that PBX's messages since the last merge,
each PBX's page touched once per merge instead of once per message.

Reading a PBX's history (`latest`, once per PBX per process) first merges the log, so that
the chunks are complete. A merge inserts chunks in small transactions and deletes the log
rows last: a crash in between leaves chunks that the next merge writes again, and readers
drop the repeated ids. A chunk of a PBX deleted meanwhile is never written (the merge
checks the PBX exists). Rows the hub stored in `event`, one per message, before chunks are
still read and pruned.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import cast

import orjson
from sqlalchemy import (
    BigInteger,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from cloudpbx.ports.bus import WireMessage
from cloudpbx.storage.sqlite_writer import SqliteWriter, in_transaction
from cloudpbx.storage.tables import event, event_chunk, event_log, pbx

log = logging.getLogger(__name__)

MERGE_LOG_ROWS = 2_000
"""Most log rows (group commits, up to 200 a second) merged in one transaction."""
MERGE_PASS_SECONDS = 0.02
"""SQLite: the longest a merge pass should hold the write lock, for which the hub's group
commits wait (one writer at a time): the rows per pass follow what the last pass took."""


class _Statement:
    """A statement compiled once for the dialect, run with positional parameters through
    the driver (sqlite3 on the writer's thread, or the engine's driver)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        self._defaults = compiled.params  # values given in the statement (its LIMIT)

    def values(self, params: Mapping[str, object]) -> tuple[object, ...]:
        given = {**self._defaults, **params}
        return tuple(given[name] for name in self._names)


_MERGE_SQL = {
    # One pass: the log rows up to `upto`, exploded into messages and grouped per PBX (of
    # a PBX that still exists), in SQL: the JSON is read and written by the database's C
    # code, with Python's GIL released, not on the event loop. The order of a chunk's
    # messages does not matter: readers order by id.
    "sqlite": (
        "INSERT INTO event_chunk (pbx_id, first_id, last_id, data) "
        "SELECT m.value ->> 0, min(m.value ->> 1), max(m.value ->> 1), "
        "json_group_array(json_array(m.value ->> 1, m.value ->> 2)) "
        "FROM event_log AS l, json_each(l.data) AS m "
        "WHERE l.seq <= ? AND (m.value ->> 0) IN (SELECT id FROM pbx) "
        "GROUP BY m.value ->> 0"
    ),
    "postgresql": (
        "INSERT INTO event_chunk (pbx_id, first_id, last_id, data) "
        "SELECT (m ->> 0)::integer, min((m ->> 1)::bigint), max((m ->> 1)::bigint), "
        "json_agg(json_build_array((m ->> 1)::bigint, m ->> 2))::text "
        "FROM event_log AS l, json_array_elements(l.data::json) AS m "
        "WHERE l.seq <= $1 AND (m ->> 0)::integer IN (SELECT id FROM pbx) "
        "GROUP BY (m ->> 0)::integer"
    ),
}


_PASS_END_SQL = {
    # The last log row of a pass of at most `limit` rows (NULL when the log is empty).
    "sqlite": "SELECT max(seq) FROM (SELECT seq FROM event_log ORDER BY seq LIMIT ?)",
    "postgresql": (
        "SELECT max(seq) FROM (SELECT seq FROM event_log ORDER BY seq LIMIT $1) AS pass"
    ),
}


def _statements(dialect: Dialect) -> dict[str, _Statement]:
    return {
        "append": _Statement(insert(event_log).values(data=bindparam("data")), dialect),
        "forget": _Statement(
            delete(event_log).where(event_log.c.seq <= bindparam("upto", type_=BigInteger)),
            dialect,
        ),
    }


class EventStore:
    def __init__(
        self, engine: AsyncEngine, *, merge_every: int = 100_000, merge_interval: float = 2.0
    ) -> None:
        self._engine = engine
        self._writer = SqliteWriter.for_engine(engine)
        self._sql = _statements(engine.dialect)
        self._merge_every = merge_every
        self._merge_interval = merge_interval
        self._since_merge = 0
        self._merged_at = time.monotonic()
        self._merge_lock = asyncio.Lock()
        self._merging: asyncio.Task[None] | None = None
        self._pass_rows = MERGE_LOG_ROWS

    async def append(self, batch: Sequence[tuple[int, WireMessage]]) -> None:
        """Store (pbx_id, message) pairs in one transaction: one log row."""
        if not batch:
            return
        data = orjson.dumps([(p, m.id, m.data) for p, m in batch]).decode()
        await self._write("append", {"data": data})
        self._since_merge += len(batch)
        if self._merge_due():
            self._merging = asyncio.create_task(self._merge_logged(), name="event-merge")

    def _merge_due(self) -> bool:
        if self._merging is not None and not self._merging.done():
            return False
        return self._since_merge >= self._merge_every or (
            time.monotonic() - self._merged_at >= self._merge_interval
        )

    async def _merge_logged(self) -> None:
        """A merge in the background: a failure is logged, and the next one (when due,
        or before a read) starts over from what is still in the log."""
        try:
            await self.merge()
        except Exception as exc:
            log.warning("could not merge the WebSocket history log (retried later): %r", exc)

    async def merge(self) -> None:
        """Move the whole log into chunks, in passes of one transaction each."""
        async with self._merge_lock:
            self._since_merge = 0
            self._merged_at = time.monotonic()
            while await self._merge_pass():
                pass

    async def _merge_pass(self) -> bool:
        """One transaction: up to `_pass_rows` log rows become chunks and go; True when
        there may be more. On SQLite the pass size follows the time the last one held
        the write lock (`MERGE_PASS_SECONDS`): the fewer rows a pass takes, the fewer
        messages per chunk, so it takes as many as that budget allows."""
        dialect = self._engine.dialect.name
        end, merge, forget = _PASS_END_SQL[dialect], _MERGE_SQL[dialect], self._sql["forget"]
        rows = self._pass_rows
        if self._writer is not None:
            work = partial(_sqlite_merge_pass, end, merge, forget.sql, rows)
            moved, seconds = await self._writer.run(work)
            self._pass_rows = _next_pass_rows(rows, moved, seconds)
            return moved >= rows
        async with self._engine.begin() as conn:
            last = (await conn.exec_driver_sql(end, (rows,))).scalar()
            if last is None:
                return False
            await conn.exec_driver_sql(merge, (last,))
            forgotten = await conn.exec_driver_sql(forget.sql, forget.values({"upto": last}))
        return int(forgotten.rowcount or 0) >= rows

    async def _write(self, name: str, params: Mapping[str, object]) -> None:
        """Statement `name` with `params`, in one transaction."""
        statement = self._sql[name]
        values = statement.values(params)
        if self._writer is not None:
            await self._writer.run(partial(_sqlite_write, statement.sql, values))
            return
        async with self._engine.begin() as conn:
            await conn.exec_driver_sql(statement.sql, values)

    async def latest(self, pbx_id: int, limit: int) -> list[WireMessage]:
        """The newest `limit` messages of a PBX, oldest first (the log merged first)."""
        await self.merge()
        kept: dict[int, str] = {}
        chunks = (
            select(event_chunk.c.data)
            .where(event_chunk.c.pbx_id == pbx_id)
            .order_by(event_chunk.c.last_id.desc())
        )
        older = (
            select(event.c.id, event.c.data)
            .where(event.c.pbx_id == pbx_id)
            .order_by(event.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            for (data,) in (await conn.execute(chunks)).all():
                kept.update((int(i), str(d)) for i, d in orjson.loads(data))
                if len(kept) >= limit:
                    break
            if len(kept) < limit:
                kept.update((int(r.id), str(r.data)) for r in (await conn.execute(older)).all())
        newest = sorted(kept)[-limit:]
        return [WireMessage(i, kept[i]) for i in newest]

    async def reserved_up_to(self, pbx_id: int) -> int:
        """The highest event id ever handed out for the PBX (its reserved blocks' end)."""
        query = select(pbx.c.event_id_reserved).where(pbx.c.id == pbx_id)
        async with self._engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return int(value or 0)

    async def prune(self, pbx_id: int, keep_after_id: int) -> int:
        """Drop stored messages with id ≤ keep_after_id (a chunk reaching past it keeps its
        newer part); returns how many rows went. The log is merged first: what it holds
        would otherwise escape this prune (once: a round of prunes over many PBXes merges
        before the first, and again only if something was appended meanwhile)."""
        if self._since_merge:
            await self.merge()
        of_pbx = event_chunk.c.pbx_id == pbx_id
        straddling = select(event_chunk.c.seq, event_chunk.c.data).where(
            of_pbx, event_chunk.c.first_id <= keep_after_id, event_chunk.c.last_id > keep_after_id
        )
        async with self._engine.begin() as conn:
            for seq, data in (await conn.execute(straddling)).all():
                newer = [m for m in orjson.loads(data) if m[0] > keep_after_id]
                await conn.execute(
                    update(event_chunk)
                    .where(event_chunk.c.seq == seq)
                    .values(first_id=newer[0][0], data=orjson.dumps(newer).decode())
                )
            chunks = await conn.execute(
                delete(event_chunk).where(of_pbx, event_chunk.c.last_id <= keep_after_id)
            )
            older = await conn.execute(
                delete(event).where(event.c.pbx_id == pbx_id, event.c.id <= keep_after_id)
            )
        return int(chunks.rowcount or 0) + int(older.rowcount or 0)

    async def close(self) -> None:
        """Merge what is logged and let the writer's thread go (a later write starts it
        again). A merge that fails here is done by the next process's first read."""
        merging = self._merging
        if merging is not None:
            await asyncio.gather(merging, return_exceptions=True)
        try:
            await self.merge()
        except Exception as exc:
            log.warning("could not merge the WebSocket history log at close: %r", exc)
        finally:
            if self._writer is not None:
                await self._writer.close()


def _sqlite_write(sql: str, values: tuple[object, ...], conn: sqlite3.Connection) -> None:
    in_transaction(conn, lambda conn: conn.execute(sql, values))


def _sqlite_merge_pass(
    end: str, merge: str, forget: str, rows: int, conn: sqlite3.Connection
) -> tuple[int, float]:
    """A merge pass in one transaction: (log rows merged, seconds it held the lock)."""
    started = time.perf_counter()

    def work(conn: sqlite3.Connection) -> int:
        last = conn.execute(end, (rows,)).fetchone()[0]
        if last is None:
            return 0
        conn.execute(merge, (last,))
        return int(conn.execute(forget, (last,)).rowcount)

    moved = in_transaction(conn, work)
    return moved, time.perf_counter() - started


def _next_pass_rows(rows: int, moved: int, seconds: float) -> int:
    """The next pass's size: fewer rows after a pass over `MERGE_PASS_SECONDS`, more
    (at most twice as many, and `MERGE_LOG_ROWS`) after a full pass well within it."""
    if moved == 0 or seconds <= 0:
        return rows
    fitting = int(moved * MERGE_PASS_SECONDS / seconds)
    if seconds > MERGE_PASS_SECONDS:
        return max(10, min(rows, fitting))
    if moved >= rows:
        return min(MERGE_LOG_ROWS, rows * 2, max(rows, fitting))
    return rows
