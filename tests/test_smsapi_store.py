"""The SMS outbox in SmsStore, on SQLite and PostgreSQL: claims, attempts, reports."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cloudpbx.domain.records import CdrRecord, SmsMessage
from cloudpbx.domain.states import Disposition, SmsStatus
from cloudpbx.storage.sms import Outbox
from cloudpbx.storage.tables import cdr, sms
from cloudpbx.storage.tenants import Tenant
from tests.test_storage_support import Stores, open_stores


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    async with open_stores(database_url) as opened:
        yield opened


def now() -> datetime:
    return datetime.now(UTC)


async def queued(
    stores: Stores,
    tenant: Tenant,
    *,
    due_in: float | None = -1.0,
    outbox: Outbox = Outbox.PENDING,
    cost: int = 32,
) -> str:
    response_id = str(10**18 + secrets.randbelow(9 * 10**18))
    created = now()
    await stores.sms.add(
        tenant,
        SmsMessage(
            response_id, "48600100200", "Dzień dobry", False, SmsStatus.QUEUE, 1, cost, created
        ),
        cdr_record=CdrRecord(
            created,
            '"P" <SMS>',
            "SMS",
            "48600100200",
            "",
            "",
            "SMS",
            0,
            0,
            Disposition.ANSWERED,
            response_id,
            cost,
            "SMS",
        ),
        gateway="acme",
        outbox=outbox,
        due_at=None if due_in is None else created + timedelta(seconds=due_in),
    )
    return response_id


async def row(stores: Stores, response_id: str) -> object:
    async with stores.engine.connect() as conn:
        return (await conn.execute(select(sms).where(sms.c.response_id == response_id))).one()


async def cdr_cost(stores: Stores, tenant: Tenant, response_id: str) -> int | None:
    async with stores.engine.connect() as conn:
        value = (
            await conn.execute(
                select(cdr.c.cost).where(cdr.c.pbx_id == tenant.id, cdr.c.uniqueid == response_id)
            )
        ).scalar_one()
    return value  # type: ignore[no-any-return]


async def test_message_and_cdr_row_are_stored_together(stores: Stores) -> None:
    tenant = await stores.tenant()
    response_id = await queued(stores, tenant)
    item = await stores.sms.item(tenant, response_id)
    assert item is not None and item.outbox is Outbox.PENDING and item.gateway == "acme"
    assert item.attempts == 0 and item.pbx == tenant.name and item.created_at.tzinfo is UTC
    assert await cdr_cost(stores, tenant, response_id) == 32


async def test_claims_take_due_messages_once(stores: Stores) -> None:
    tenant = await stores.tenant()
    due = [await queued(stores, tenant, due_in=-3 + i) for i in range(3)]
    later = await queued(stores, tenant, due_in=60)
    never = await queued(stores, tenant, due_in=None)
    lease = now() + timedelta(seconds=30)
    claimed = await stores.sms.claim_due(now(), lease, 100)
    mine = [i.response_id for i in claimed if i.pbx_id == tenant.id]
    assert mine == due  # oldest due first; not the later or never-due ones
    assert later not in mine and never not in mine
    again = await stores.sms.claim_due(now(), lease, 100)
    assert not [i for i in again if i.pbx_id == tenant.id]  # leased


async def test_concurrent_claims_never_share_a_message(stores: Stores) -> None:
    tenant = await stores.tenant()
    wanted = {await queued(stores, tenant) for _ in range(12)}
    lease = now() + timedelta(seconds=30)
    rounds = await asyncio.gather(*(stores.sms.claim_due(now(), lease, 5) for _ in range(6)))
    taken = [i.response_id for r in rounds for i in r if i.pbx_id == tenant.id]
    assert len(taken) == len(set(taken))
    assert set(taken) <= wanted


async def test_attempts_and_costs(stores: Stores) -> None:
    tenant = await stores.tenant()
    response_id = await queued(stores, tenant)
    later = now() + timedelta(seconds=5)
    await stores.sms.record_attempt(
        tenant.id,
        response_id,
        outbox=Outbox.UNSURE,
        attempts=1,
        due_at=later,
        last_error="x" * 400,
    )
    item = await stores.sms.item(tenant, response_id)
    assert item is not None and item.outbox is Outbox.UNSURE and item.attempts == 1
    stored = await row(stores, response_id)
    assert len(stored.last_error) == 255  # type: ignore[attr-defined]
    await stores.sms.record_attempt(
        tenant.id,
        response_id,
        outbox=Outbox.ACCEPTED,
        attempts=2,
        due_at=later,
        gateway_id="G1",
        cost=33,
        parts=2,
    )
    item = await stores.sms.item(tenant, response_id)
    assert item is not None and item.outbox is Outbox.ACCEPTED and item.gateway_id == "G1"
    assert item.parts == 2 and await cdr_cost(stores, tenant, response_id) == 33
    message = await stores.sms.get(tenant, response_id)
    assert message is not None and message.cost == 33


async def test_a_report_wins_over_a_late_attempt(stores: Stores) -> None:
    tenant = await stores.tenant()
    response_id = await queued(stores, tenant)
    change = await stores.sms.apply_status(
        tenant, response_id, SmsStatus.DELIVERED, gateway_id="G7"
    )
    assert change.applied
    stored = await row(stores, response_id)
    assert stored.outbox == "accepted" and stored.gateway_id == "G7"  # type: ignore[attr-defined]
    assert stored.due_at is None  # type: ignore[attr-defined]  (final: nothing due)
    # The submission that timed out meanwhile does not put it back, nor schedule it.
    await stores.sms.record_attempt(
        tenant.id, response_id, outbox=Outbox.UNSURE, attempts=1, due_at=now()
    )
    await stores.sms.record_attempt(
        tenant.id,
        response_id,
        outbox=Outbox.ACCEPTED,
        attempts=1,
        due_at=now(),
        gateway_id="OTHER",
    )
    stored = await row(stores, response_id)
    assert stored.outbox == "accepted" and stored.gateway_id == "G7"  # type: ignore[attr-defined]
    assert stored.due_at is None  # type: ignore[attr-defined]
    await stores.sms.reschedule(tenant.id, response_id, now())
    assert (await row(stores, response_id)).due_at is None  # type: ignore[attr-defined]


async def test_polls_repeating_a_status_do_not_fill_the_history(stores: Stores) -> None:
    tenant = await stores.tenant()
    response_id = await queued(stores, tenant, outbox=Outbox.ACCEPTED)
    for _ in range(3):
        await stores.sms.apply_status(tenant, response_id, SmsStatus.SENT, repeat_in_history=False)
    await stores.sms.apply_status(tenant, response_id, SmsStatus.SENT)  # a callback: kept
    assert await stores.sms.history(tenant, response_id) == [
        SmsStatus.QUEUE,
        SmsStatus.SENT,
        SmsStatus.SENT,
    ]


async def test_resolve_is_per_pbx(stores: Stores) -> None:
    tenant, other = await stores.tenant(), await stores.tenant()
    mine = await queued(stores, tenant)
    theirs = await queued(stores, other)
    await stores.sms.apply_status(tenant, mine, SmsStatus.SENT, gateway_id="M1")
    await stores.sms.apply_status(other, theirs, SmsStatus.SENT, gateway_id="T1")
    assert await stores.sms.resolve(tenant, mine, None) == [(mine, "M1")]
    assert await stores.sms.resolve(tenant, None, "M1") == [(mine, "M1")]
    assert await stores.sms.resolve(tenant, theirs, "T1") == []
    assert await stores.sms.resolve(tenant, None, None) == []
