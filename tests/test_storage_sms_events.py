"""SmsStore and EventStore on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from cloudpbx.domain.records import SmsMessage
from cloudpbx.domain.states import SmsStatus
from cloudpbx.ports.bus import WireMessage
from cloudpbx.storage.events import EventStore
from cloudpbx.storage.sms import StatusChange
from cloudpbx.storage.tenants import Tenant, utcnow
from tests.test_storage_support import Stores, at, open_stores

Q, A, R, S, D = (
    SmsStatus.QUEUE,
    SmsStatus.ACCEPTED,
    SmsStatus.RENEWAL,
    SmsStatus.SENT,
    SmsStatus.DELIVERED,
)


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    async with open_stores(database_url) as opened:
        yield opened


def message(body: str = "Zażółć gęślą jaźń", **fields: object) -> SmsMessage:
    values: dict[str, object] = {
        "response_id": str(secrets.randbelow(10**19)),
        "to": "48500100200",
        "body": body,
        "test": False,
        "status": Q,
        "parts": 1,
        "cost": 16,
        "created_at": at("2025-06-10 08:00:00"),
    }
    values.update(fields)
    return SmsMessage(**values)  # type: ignore[arg-type]


async def sent(stores: Stores, tenant: Tenant, **fields: object) -> SmsMessage:
    sms = message(**fields)
    await stores.sms.add(tenant, sms)
    return sms


# -- SMS -----------------------------------------------------------------------------------


async def test_add_and_get(stores: Stores) -> None:
    tenant = await stores.tenant()
    other = await stores.tenant()
    before = utcnow().replace(tzinfo=UTC) - timedelta(seconds=1)
    sms = await sent(stores, tenant, body='"cytat" \\ 📞 ' + "x" * 1000, test=True, cost=None)
    stored = await stores.sms.get(tenant, sms.response_id)
    assert stored is not None
    # Everything round-trips; created_at is when the store saw it, aware UTC.
    assert stored.response_id == sms.response_id and stored.to == sms.to
    assert stored.body == sms.body and stored.test is True and stored.cost is None
    assert stored.status is Q and stored.parts == 1
    assert stored.created_at.tzinfo is UTC and stored.created_at >= before
    assert await stores.sms.get(other, sms.response_id) is None
    assert await stores.sms.get(tenant, "0") is None
    assert await stores.sms.history(tenant, sms.response_id) == [Q]


async def test_response_ids_are_unique(stores: Stores) -> None:
    tenant = await stores.tenant()
    sms = await sent(stores, tenant)
    with pytest.raises(IntegrityError):
        await stores.sms.add(tenant, sms)


async def test_statuses_move_forward_only(stores: Stores) -> None:
    tenant = await stores.tenant()
    sms = await sent(stores, tenant)

    async def apply(status: SmsStatus) -> bool:
        change = await stores.sms.apply_status(tenant, sms.response_id, status)
        assert change.message is not None and change.message.response_id == sms.response_id
        return change.applied

    assert await apply(A) is True
    assert await apply(A) is False  # duplicate report
    assert await apply(S) is True
    assert await apply(R) is False  # an earlier stage arriving late
    assert await apply(D) is True
    assert await apply(S) is False  # a late SENT after DELIVERED: kept in history only
    assert await apply(SmsStatus.FAILED) is False  # a final status is never replaced
    assert await apply(D) is False

    stored = await stores.sms.get(tenant, sms.response_id)
    assert stored is not None and stored.status is D
    assert await stores.sms.history(tenant, sms.response_id) == [
        Q,
        A,
        A,
        S,
        R,
        D,
        S,
        SmsStatus.FAILED,
        D,
    ]


async def test_applied_change_returns_the_updated_message(stores: Stores) -> None:
    tenant = await stores.tenant()
    sms = await sent(stores, tenant)
    change = await stores.sms.apply_status(tenant, sms.response_id, S)
    assert change.applied and change.message is not None and change.message.status is S
    late = await stores.sms.apply_status(tenant, sms.response_id, A)
    assert not late.applied and late.message is not None and late.message.status is S


@pytest.mark.parametrize("final", [s for s in SmsStatus if s.is_final])
async def test_every_final_status_sticks(stores: Stores, final: SmsStatus) -> None:
    tenant = await stores.tenant()
    sms = await sent(stores, tenant)
    assert (await stores.sms.apply_status(tenant, sms.response_id, final)).applied
    for later in SmsStatus:
        assert not (await stores.sms.apply_status(tenant, sms.response_id, later)).applied
    stored = await stores.sms.get(tenant, sms.response_id)
    assert stored is not None and stored.status is final


async def test_unknown_or_foreign_message(stores: Stores) -> None:
    tenant = await stores.tenant()
    other = await stores.tenant()
    sms = await sent(stores, tenant)
    assert await stores.sms.apply_status(tenant, "404", D) == StatusChange(False, None)
    # Another PBX cannot touch the message, not even its history.
    assert await stores.sms.apply_status(other, sms.response_id, D) == StatusChange(False, None)
    assert await stores.sms.history(other, sms.response_id) == []
    assert await stores.sms.history(tenant, sms.response_id) == [Q]
    stored = await stores.sms.get(tenant, sms.response_id)
    assert stored is not None and stored.status is Q


async def test_concurrent_reports_never_move_backwards(stores: Stores) -> None:
    tenant = await stores.tenant()
    for _ in range(5):
        sms = await sent(stores, tenant)
        reports = [A, S, D, S, A, R, D, S]
        changes = await asyncio.gather(
            *(stores.sms.apply_status(tenant, sms.response_id, r) for r in reports)
        )
        stored = await stores.sms.get(tenant, sms.response_id)
        assert stored is not None and stored.status is D
        assert sum(1 for c in changes if c.applied and c.message and c.message.status is D) == 1
        assert sorted(await stores.sms.history(tenant, sms.response_id)) == sorted([Q, *reports])


# -- events --------------------------------------------------------------------------------


def wire(pbx: Tenant, ident: int) -> WireMessage:
    data = f'{{"id": {ident}, "channel": "pbx_{pbx.name}", "text": {{"queue": {{"peer": "ż"}}}}}}'
    return WireMessage(ident, data)


async def test_events_append_latest_prune(stores: Stores) -> None:
    a = await stores.tenant("A")
    b = await stores.tenant("B")
    await stores.events.append([])  # nothing to do
    assert await stores.events.latest(a.id, 10) == []

    await stores.events.append([(a.id, wire(a, i)) for i in range(1, 6)] + [(b.id, wire(b, 1))])
    await stores.events.append([(a.id, wire(a, i)) for i in (6, 7, 9)])  # a gap is fine

    assert await stores.events.latest(a.id, 3) == [wire(a, 6), wire(a, 7), wire(a, 9)]
    assert [m.id for m in await stores.events.latest(a.id, 100)] == [1, 2, 3, 4, 5, 6, 7, 9]
    assert await stores.events.latest(b.id, 100) == [wire(b, 1)]  # data round-trips

    await stores.events.prune(a.id, keep_after_id=5)  # inside the merged chunk 1..9
    assert [m.id for m in await stores.events.latest(a.id, 100)] == [6, 7, 9]
    await stores.events.append([(a.id, wire(a, 10))])
    await stores.events.prune(a.id, keep_after_id=9)  # the log is merged, then pruned
    assert await stores.events.latest(a.id, 100) == [wire(a, 10)]
    assert await stores.events.latest(b.id, 100) == [wire(b, 1)]  # other PBX untouched


async def test_a_message_logged_twice_is_read_once(stores: Stores) -> None:
    """A merge cut short (a crash after some chunks) is done again from the same log rows:
    the chunks then repeat messages, and reading drops the repeats."""
    a = await stores.tenant("A")
    await stores.events.append([(a.id, wire(a, 1)), (a.id, wire(a, 2))])
    await stores.events.merge()
    await stores.events.append([(a.id, wire(a, 2)), (a.id, wire(a, 3))])
    assert await stores.events.latest(a.id, 10) == [wire(a, 1), wire(a, 2), wire(a, 3)]
    assert await stores.events.latest(a.id, 2) == [wire(a, 2), wire(a, 3)]


class FailingMerges(EventStore):
    """The real store whose merges fail while `broken` (the database refusing them)."""

    def __init__(self, stores: Stores) -> None:
        super().__init__(stores.engine, merge_every=2)
        self.broken = True

    async def merge(self) -> None:
        if self.broken:
            raise OSError("database unavailable")
        await super().merge()


async def test_a_failing_background_merge_is_logged_and_done_later(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    a = await stores.tenant("A")
    store = FailingMerges(stores)
    await store.append([(a.id, wire(a, 1)), (a.id, wire(a, 2))])  # due: a merge starts
    for _ in range(200):
        if "could not merge the WebSocket history log (retried later)" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "could not merge the WebSocket history log (retried later)" in caplog.text
    store.broken = False
    assert await store.latest(a.id, 10) == [wire(a, 1), wire(a, 2)]  # merged now
    await store.close()
