"""Helpers shared by the storage tests (no tests here).

Every storage test runs on SQLite and PostgreSQL through the `database_url` fixture. On
PostgreSQL one database serves the whole session, so each test works on PBXes with unique
names and removes them when it is done.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.domain.records import CdrRecord
from cloudpbx.domain.states import Disposition
from cloudpbx.storage.calls import CallStore
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.events import EventStore
from cloudpbx.storage.migrate import upgrade
from cloudpbx.storage.reads import SqliteReaders
from cloudpbx.storage.sms import SmsStore
from cloudpbx.storage.tables import metadata
from cloudpbx.storage.tenants import Tenant, TenantStore


@dataclass
class Stores:
    engine: AsyncEngine
    tenants: TenantStore
    calls: CallStore
    sms: SmsStore
    events: EventStore
    created: list[str]

    async def tenant(self, stem: str = "Pbx", timezone: str = "Europe/Warsaw") -> Tenant:
        """A new PBX with a unique name, removed when the test ends."""
        tenant = await self.tenants.create(unique_name(stem), timezone)
        self.created.append(tenant.name)
        return tenant


@asynccontextmanager
async def open_stores(url: str) -> AsyncIterator[Stores]:
    """Migrated stores on `url`; PBXes made through `Stores.tenant` are removed after."""
    engine = create_engine(url)
    await upgrade(engine)
    readers = SqliteReaders.for_engine(engine)  # as the runtime wires them (SQLite)
    stores = Stores(
        engine,
        TenantStore(engine, readers=readers),
        CallStore(engine, readers=readers),
        SmsStore(engine),
        EventStore(engine),
        [],
    )
    try:
        yield stores
    finally:
        for name in stores.created:
            if await stores.tenants.get(name) is not None:
                await stores.tenants.remove(name)
        if readers is not None:
            await readers.close()
        await engine.dispose()


def unique_name(stem: str = "Pbx") -> str:
    return f"{stem}_{secrets.token_hex(4)}"


def at(text: str) -> datetime:
    """`2025-01-02 03:04:05` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cdr_record(started_at: datetime, uniqueid: str, **fields: Any) -> CdrRecord:
    values: dict[str, Any] = {
        "clid": '"Jan Kowalski" <101>',
        "src": "101",
        "dst": "102",
        "channel": "SIP/Pbx-101-00000001",
        "dstchannel": "SIP/Pbx-102-00000002",
        "lastapp": "Dial",
        "duration": 30,
        "billsec": 20,
        "disposition": Disposition.ANSWERED,
        "cost": None,
        "zone": "",
    }
    values.update(fields)
    return CdrRecord(started_at=started_at, uniqueid=uniqueid, **values)


async def dump_rows(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the schema (and alembic_version is not in metadata)."""
    dump: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(select(table))).mappings().all()
            dump[table.name] = [dict(row) for row in rows]
    return dump


TABLES_OF_NO_PBX = frozenset(
    {
        "lease",  # names an Asterisk server, not a tenant
        "event_log",  # a row holds many PBXes' messages; merged into event_chunk (per PBX)
    }
)


async def rows_of_pbx(
    engine: AsyncEngine, pbx_id: int, sms_ids: set[int] | None = None
) -> dict[str, int]:
    """How many rows each table holds for PBX `pbx_id`.

    `sms_status_history` has no pbx_id: its rows are counted by `sms_ids` (default: the ids
    of the PBX's SMS rows now; pass the ids taken before a delete to check a cascade).
    """
    dump = await dump_rows(engine)
    if sms_ids is None:
        sms_ids = {row["id"] for row in dump["sms"] if row["pbx_id"] == pbx_id}
    counts: dict[str, int] = {}
    for name, rows in dump.items():
        if name in TABLES_OF_NO_PBX:
            continue
        if name == "pbx":
            counts[name] = sum(1 for row in rows if row["id"] == pbx_id)
        elif name == "sms_status_history":
            counts[name] = sum(1 for row in rows if row["sms_id"] in sms_ids)
        else:
            counts[name] = sum(1 for row in rows if row["pbx_id"] == pbx_id)
    return counts
