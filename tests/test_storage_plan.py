"""Performance shape (not timed): the /cdr range query is served by ix_cdr_pbx_started.

About 50,000 CDR rows over 30 days; the query of one day must search the index on
(pbx_id, started_at), never scan the table. The plans are taken for the very statements
CallStore.cdr_page runs (CallStore.cdr_query), with the bounds inlined as literals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from sqlalchemy import Select

from cloudpbx.domain.dates import DateRange
from cloudpbx.domain.states import Disposition
from tests.test_storage_support import Stores, at, cdr_record, open_stores

ROWS = 50_000
DAYS = 30
BATCH = 10_000


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    async with open_stores(database_url) as opened:
        yield opened


async def explain(stores: Stores, statement: Select[int] | Select[str]) -> str:
    sql = str(statement.compile(stores.engine.sync_engine, compile_kwargs={"literal_binds": True}))
    async with stores.engine.connect() as conn:
        if stores.engine.dialect.name == "sqlite":
            rows = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")).all()
            return "\n".join(str(row[-1]) for row in rows)
        rows = (await conn.exec_driver_sql(f"EXPLAIN {sql}")).all()
        return "\n".join(str(row[0]) for row in rows)


async def test_cdr_day_query_uses_the_index(stores: Stores) -> None:
    tenant = await stores.tenant("Busy")
    neighbour = await stores.tenant("Quiet")
    start = at("2025-05-01 00:00:00")
    step = timedelta(days=DAYS) / ROWS
    dispositions = list(Disposition)
    for offset in range(0, ROWS, BATCH):
        await stores.calls.add_cdrs(
            tenant,
            [
                cdr_record(
                    start + step * i,
                    f"{1746057600 + i}.{i}",
                    disposition=dispositions[i % len(dispositions)],
                    billsec=0 if i % 4 else 20,
                )
                for i in range(offset, offset + BATCH)
            ],
        )
    await stores.calls.add_cdrs(neighbour, [cdr_record(start + timedelta(days=9), "n.1")])
    async with stores.engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")  # plans as a server with statistics makes them
        await conn.commit()

    period = DateRange(date(2025, 5, 10), date(2025, 5, 10), tenant.zone)
    query = stores.calls.cdr_query(tenant, period, 10_000)
    page = await stores.calls.cdr_page(tenant, period, 10_000)
    assert 1_500 < page.total < 1_800 and not page.truncated  # one day of 30

    rows_plan = await explain(stores, query.body)
    count_plan = await explain(stores, query.count)
    for plan in (rows_plan, count_plan):
        assert "ix_cdr_pbx_started" in plan, plan
        if stores.engine.dialect.name == "sqlite":
            assert "SEARCH cdr USING" in plan and "SCAN cdr" not in plan, plan
        else:  # (the fingerprint reads the PBX's row too: a tiny table, scanned at will)
            assert "Seq Scan on cdr" not in plan, plan
    if stores.engine.dialect.name == "sqlite":
        # The rowid ends every SQLite index, so (started_at, id) order comes from the index.
        assert "TEMP B-TREE" not in rows_plan, rows_plan
