"""Hot reads: statements built once, and on SQLite run in one trip to the driver's thread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection


class Read:
    """A SELECT built once, read for one row. On SQLite it goes to the aiosqlite driver in
    one trip to its thread: through SQLAlchemy a query takes five (cursor, execute, fetch,
    close, and the pool's rollback stays a sixth), ~0.3 ms against ~0.1 ms, and each trip
    costs more on a busy machine. For the reads of every request: the API key, the /cdr
    page check, the small lists (docs/benchmarks.md, issue 13). Parameters go through
    their types' bind processors, as SQLAlchemy would send them (datetimes in its own
    text format); results come as the driver gives them (SQLAlchemy's result processing
    is skipped, so select only plain integers, strings and bytes)."""

    def __init__(self, statement: Select[*tuple[Any, ...]], dialect: Dialect) -> None:
        self.statement = statement
        self._sqlite = dialect.name == "sqlite"
        self._compiled = statement.compile(dialect=dialect)
        self._sql = str(self._compiled)
        self._binds = [
            (name, self._compiled.binds[name].type.bind_processor(dialect))
            for name in self._compiled.positiontup or ()
        ]

    async def one(self, conn: AsyncConnection, params: Mapping[str, object]) -> Sequence[Any]:
        """The first row; LookupError if there is none."""
        found = await self.first(conn, params)
        if found is None:
            raise LookupError("the statement returned no row")
        return found

    async def first(
        self, conn: AsyncConnection, params: Mapping[str, object]
    ) -> Sequence[Any] | None:
        """The first row, or None."""
        if not self._sqlite:
            row = (await conn.execute(self.statement, params)).first()
            return None if row is None else tuple(row)
        given = self._compiled.construct_params(dict(params))  # with the statement's own
        values = [
            given[name] if process is None else process(given[name])
            for name, process in self._binds
        ]
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        rows = await driver.execute_fetchall(self._sql, values)
        return tuple(rows[0]) if rows else None
