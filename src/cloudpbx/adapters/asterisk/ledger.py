"""`CdrLedger` over the project's database: which rows of some calls are already stored.

(The one place the Asterisk adapter reads the store directly: the CDR catch-up must not
import a row twice, and `CallStore` has no query by uniqueids. It uses the index
`ix_cdr_pbx_uniqueid`.)
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.adapters.asterisk.cdr_import import CdrKey
from cloudpbx.storage.tables import cdr
from cloudpbx.storage.tenants import TenantStore

__all__ = ["StoreLedger"]

_CHUNK = 500


class StoreLedger:
    def __init__(self, engine: AsyncEngine, tenants: TenantStore) -> None:
        self._engine = engine
        self._tenants = tenants

    async def stored(self, pbx: str, uniqueids: Iterable[str]) -> set[CdrKey]:
        tenant = await self._tenants.require(pbx)
        wanted = sorted(set(uniqueids))
        found: set[CdrKey] = set()
        async with self._engine.connect() as conn:
            for start in range(0, len(wanted), _CHUNK):
                query = select(
                    cdr.c.uniqueid,
                    cdr.c.started_at,
                    cdr.c.disposition,
                    cdr.c.lastapp,
                    cdr.c.duration,
                    cdr.c.billsec,
                    cdr.c.dst,
                    cdr.c.channel,
                    cdr.c.dstchannel,
                ).where(
                    cdr.c.pbx_id == tenant.id, cdr.c.uniqueid.in_(wanted[start : start + _CHUNK])
                )
                for row in await conn.execute(query):
                    found.add(
                        (
                            pbx,
                            row.uniqueid,
                            row.started_at.replace(tzinfo=None, microsecond=0),
                            row.disposition,
                            row.lastapp,
                            row.duration,
                            row.billsec,
                            row.dst,
                            row.channel,
                            row.dstchannel,
                        )
                    )
        return found
