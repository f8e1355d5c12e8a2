"""One SQLite connection on a thread of its own, for the writes of a hot path.

Through SQLAlchemy's async engine a transaction on SQLite is several hand-offs to
aiosqlite's thread and back (begin, each statement, commit, the pool's return), each a
wake-up of that thread and of the event loop: ~0.3 ms of CPU for a commit that SQLite
itself does in tens of µs. The event hub commits up to 200 times a second, and with one
client per PBX that cost lands on every message (issue 11, bench `channels`). Here a whole
transaction is one function run on the writer's thread: one hand-off each way.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.storage.database import sqlite_file

T = TypeVar("T")


class SqliteWriter:
    """Runs functions of a `sqlite3.Connection` in order, on one thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> SqliteWriter | None:
        """A writer on `engine`'s SQLite file; None for other databases (and `:memory:`)."""
        path = sqlite_file(engine)
        return None if path is None else cls(path)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the writer's thread, after what was submitted before."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._open()
        return work(conn)

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode: each `work` opens its own transaction (BEGIN IMMEDIATE: it
        # takes the write lock at once, or waits for it up to the busy timeout).
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def close(self) -> None:
        """Close the connection and end the thread; a later `run` opens both again."""

        def close(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None

        executor, self._executor = self._executor, None
        if executor is None:
            return
        if self._conn is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(executor, self._run, close)
        executor.shutdown(wait=True)


def in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work` inside BEGIN IMMEDIATE … COMMIT, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
