"""Leases in SQL (PostgreSQL or SQLite, the same statements): see ports/lease.py.

Every condition on time uses the database's clock (`_db_now`), in seconds since the epoch,
so the clocks of the processes never decide who holds a lease. A term is won by one
conditional statement: the INSERT of a lease nobody held yet, or the UPDATE of an expired
one that bumps its token. PostgreSQL re-checks an UPDATE's WHERE against the row a
concurrent winner committed, and SQLite runs one writer at a time, so two acquirers never
both win, and a token is never handed out twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.ports.lease import Term
from cloudpbx.storage.database import is_sqlite
from cloudpbx.storage.tables import lease

# julianday('now') has millisecond resolution (CURRENT_TIMESTAMP only seconds);
# clock_timestamp() is the real time, not the transaction's start like now().
_SQLITE_NOW = (func.julianday("now") - 2440587.5) * 86400.0
_POSTGRES_NOW = func.extract("epoch", func.clock_timestamp())


class SqlLeaseStore:
    """`LeaseStore` on the server's database (table `lease`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = is_sqlite(engine)

    def _db_now(self) -> ColumnElement[Any]:
        return _SQLITE_NOW if self._sqlite else _POSTGRES_NOW

    async def acquire(self, name: str, holder: str, ttl: float) -> Term | None:
        now = self._db_now()
        insert = (sqlite.insert if self._sqlite else postgresql.insert)(lease)
        first = (
            insert.from_select(
                ["name", "holder", "token", "expires_at"],
                select(literal(name), literal(holder), literal(1), now + ttl),
            )
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(lease.c.token)
        )
        takeover = (
            update(lease)
            .where(lease.c.name == name, lease.c.expires_at <= now)
            .values(holder=holder, token=lease.c.token + 1, expires_at=now + ttl)
            .returning(lease.c.token)
        )
        async with self._engine.begin() as conn:
            token = (await conn.execute(first)).scalar()
            if token is None:
                token = (await conn.execute(takeover)).scalar()
        return None if token is None else Term(name, holder, int(token))

    async def renew(self, term: Term, ttl: float) -> bool:
        now = self._db_now()
        query = (
            update(lease)
            .where(self._live(term))
            .values(expires_at=now + ttl)
            .returning(lease.c.token)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(query)).scalar() is not None

    async def release(self, term: Term) -> None:
        query = update(lease).where(self._live(term)).values(expires_at=self._db_now())
        async with self._engine.begin() as conn:
            await conn.execute(query)

    async def is_current(self, term: Term) -> bool:
        query = select(lease.c.token).where(self._live(term))
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).scalar() is not None

    def _live(self, term: Term) -> ColumnElement[bool]:
        return and_(
            lease.c.name == term.name,
            lease.c.holder == term.holder,
            lease.c.token == term.token,
            lease.c.expires_at > self._db_now(),
        )
