"""Hot reads: statements built once, and on SQLite run in one trip to a reader's thread."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite
from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloudpbx.storage.database import sqlite_file


class Read:
    """A SELECT built once, read for one row. On SQLite it goes to an aiosqlite driver in
    one trip to its thread: through SQLAlchemy a query takes five (cursor, execute, fetch,
    close, and the pool's rollback stays a sixth), ~0.3 ms against ~0.1 ms, and each trip
    costs more on a busy machine. For the reads of every request: the API key, the /cdr
    page check, the small lists (docs/benchmarks.md, issue 13). Parameters go through
    their types' bind processors, as SQLAlchemy would send them (datetimes in its own
    text format); results come as the driver gives them (SQLAlchemy's result processing
    is skipped, so select only plain integers, strings and bytes)."""

    def __init__(
        self, statement: Select[*tuple[Any, ...]], dialect: Dialect, *, may_be_large: bool = False
    ) -> None:
        """`may_be_large`: a read known to take milliseconds (a page rendered anew), which
        SqliteReaders sends straight to a thread rather than trying it within its budget."""
        self.statement = statement
        self.may_be_large = may_be_large
        self._sqlite = dialect.name == "sqlite"
        self._compiled = statement.compile(dialect=dialect)
        self.sql = str(self._compiled)
        self._binds = [
            (name, self._compiled.binds[name].type.bind_processor(dialect))
            for name in self._compiled.positiontup or ()
        ]

    def values(self, params: Mapping[str, object]) -> list[object]:
        """The statement's positional parameters (SQLite), as SQLAlchemy would bind them."""
        given = self._compiled.construct_params(dict(params))  # with the statement's own
        return [
            given[name] if process is None else process(given[name])
            for name, process in self._binds
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
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        rows = await driver.execute_fetchall(self.sql, self.values(params))
        return tuple(rows[0]) if rows else None


class SqliteReaders:
    """A few SQLite connections of their own for the hot reads, used in turn.

    A read through the engine's pool pays for the check-out and return (three greenlet
    switches and the pool's locks) on top of the trip to the driver's thread: ~0.3 ms
    against ~0.15 ms for the same statement sent straight to an aiosqlite connection, on
    a busy machine, for a query that runs in ~0.05 ms (the 50-row list, issue 13). These
    connections only read (`PRAGMA query_only`); in WAL mode a reader never waits for the
    writer and sees every committed row, so they are as current as the pool's. No
    transaction spans two reads, so reads of concurrent requests may share a connection
    (aiosqlite runs them in order on its thread); several connections keep one long read
    (an uncached 10,000-row page, ~5 ms) from delaying most of the others.

    Most hot reads are smaller than the trip itself: the API key and the /cdr stamp are
    index lookups (~10 µs), a 50-row list ~50 µs, while handing a statement to a thread and
    waking the event loop with its result costs ~100 µs, more on a busy machine. So each
    read is first run on the event loop's own thread, on a connection of its own, with a
    budget (`inline_budget`, 0.5 ms): SQLite's progress handler interrupts it when the
    budget is spent, and the read is run again on a reader's thread. No read blocks the
    loop for longer than the budget, whatever the range asks for; a large list pays the
    budget on top of its read. `may_be_large` reads (an uncached /cdr page) skip the try.
    """

    def __init__(self, path: str, size: int = 4, inline_budget: float = 0.0005) -> None:
        self._path = path
        self._size = size
        self._connections: list[aiosqlite.Connection] = []
        self._turn = itertools.count()
        self._opening = asyncio.Lock()
        self._inline_budget = inline_budget
        self._inline: sqlite3.Connection | None = None
        self._deadline = 0.0

    @classmethod
    def for_engine(cls, engine: AsyncEngine, size: int = 4) -> SqliteReaders | None:
        """Readers on `engine`'s SQLite file; None for other databases (and `:memory:`)."""
        path = sqlite_file(engine)
        return None if path is None else cls(path, size)

    async def first(self, read: Read, params: Mapping[str, object]) -> Sequence[Any] | None:
        """`read`'s first row, or None."""
        values = read.values(params)
        rows = None if read.may_be_large else self._within_budget(read.sql, values)
        if rows is None:
            if not self._connections:
                await self._open()
            conn = self._connections[next(self._turn) % len(self._connections)]
            rows = list(await conn.execute_fetchall(read.sql, values))
        return tuple(rows[0]) if rows else None

    def _within_budget(self, sql: str, values: list[object]) -> list[Any] | None:
        """The rows, read on the event loop's thread; None when the read was interrupted
        at the budget or found the database busy (a reader's thread then waits for it)."""
        conn = self._inline
        if conn is None:
            # check_same_thread off: tests run several loops, one at a time; every use
            # is from whichever thread runs the loop, never two at once.
            conn = sqlite3.connect(self._path, timeout=0, check_same_thread=False)
            conn.isolation_level = None
            conn.execute("PRAGMA query_only=ON")
            conn.set_progress_handler(self._over_budget, 1000)
            self._inline = conn
        self._deadline = time.perf_counter() + self._inline_budget
        try:
            return conn.execute(sql, values).fetchall()
        except sqlite3.OperationalError:  # interrupted or busy; a real error recurs there
            return None

    def _over_budget(self) -> bool:
        return time.perf_counter() > self._deadline

    async def one(self, read: Read, params: Mapping[str, object]) -> Sequence[Any]:
        found = await self.first(read, params)
        if found is None:
            raise LookupError("the statement returned no row")
        return found

    async def _open(self) -> None:
        async with self._opening:
            while len(self._connections) < self._size:
                conn = await aiosqlite.connect(self._path, timeout=30)
                await conn.execute("PRAGMA query_only=ON")
                await conn.execute("PRAGMA busy_timeout=30000")
                self._connections.append(conn)

    async def close(self) -> None:
        connections, self._connections = self._connections, []
        for conn in connections:
            await conn.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None


class ConnectionReader:
    """Reads on one checked-out connection: the engine's pool (PostgreSQL, or SQLite
    without readers), the same interface as SqliteReaders."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def first(self, read: Read, params: Mapping[str, object]) -> Sequence[Any] | None:
        return await read.first(self._conn, params)

    async def one(self, read: Read, params: Mapping[str, object]) -> Sequence[Any]:
        return await read.one(self._conn, params)
