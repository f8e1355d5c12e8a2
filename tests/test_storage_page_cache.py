"""The /cdr page cache never serves rows that are no longer exactly the range's rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest

from cloudpbx.domain.dates import DateRange
from cloudpbx.storage.calls import set_cdr_cost
from cloudpbx.storage.json_rows import JsonPage
from cloudpbx.storage.page_cache import PageCache
from tests.test_storage_support import Stores, cdr_record, open_stores


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    async with open_stores(database_url) as opened:
        yield opened


def uniqueids(page: JsonPage) -> list[str]:
    return [row["uniqueid"] for row in json.loads(page.body)]


async def test_a_new_row_in_a_cached_day_is_served_at_once(stores: Stores) -> None:
    tenant = await stores.tenant()
    day = DateRange(date(2026, 3, 10), date(2026, 3, 10), tenant.zone)
    noon = datetime(2026, 3, 10, 11, tzinfo=UTC)
    await stores.calls.add_cdrs(tenant, [cdr_record(noon, "1.1"), cdr_record(noon, "1.2")])
    first = await stores.calls.cdr_page(tenant, day, 100)
    assert await stores.calls.cdr_page(tenant, day, 100) is first  # served from the cache
    await stores.calls.add_cdrs(tenant, [cdr_record(noon, "1.3")])
    again = await stores.calls.cdr_page(tenant, day, 100)
    assert uniqueids(again) == ["1.1", "1.2", "1.3"] and again.total == 3
    # A row on another day does not invalidate this day's page.
    await stores.calls.add_cdrs(tenant, [cdr_record(datetime(2026, 3, 12, tzinfo=UTC), "2.1")])
    assert await stores.calls.cdr_page(tenant, day, 100) is again


async def test_a_cost_set_later_changes_the_page_and_its_tag(stores: Stores) -> None:
    """An SMS's CDR row gets its cost after it was stored (storage/sms.py): the only change
    to a stored row. Its page is rendered again and tagged anew; the row's JSON keeps the
    document's field order."""
    tenant = await stores.tenant()
    day = DateRange(date(2026, 3, 10), date(2026, 3, 10), tenant.zone)
    noon = datetime(2026, 3, 10, 11, tzinfo=UTC)
    await stores.calls.add_cdrs(tenant, [cdr_record(noon, "sms.1"), cdr_record(noon, "1.2")])
    before = await stores.calls.cdr_page(tenant, day, 100)
    assert [row["cost"] for row in json.loads(before.body)] == ["", ""]
    async with stores.engine.begin() as conn:
        await set_cdr_cost(conn, tenant.id, "sms.1", 16)
    after = await stores.calls.cdr_page(tenant, day, 100)
    rows = json.loads(after.body)
    assert [row["cost"] for row in rows] == ["16", ""]
    assert list(rows[0]) == list(json.loads(before.body)[0])
    assert after.tag is not None and after.tag != before.tag
    assert await stores.calls.cdr_page(tenant, day, 100) is after  # cached again
    found = await stores.calls.find_cdr(tenant, "sms.1")
    assert found is not None and found["cost"] == 16


async def test_a_recreated_pbx_never_sees_the_old_pages(stores: Stores) -> None:
    tenant = await stores.tenant()
    day = DateRange(date(2026, 3, 10), date(2026, 3, 10), tenant.zone)
    noon = datetime(2026, 3, 10, 11, tzinfo=UTC)
    await stores.calls.add_cdrs(tenant, [cdr_record(noon, "old.1")])
    assert uniqueids(await stores.calls.cdr_page(tenant, day, 100)) == ["old.1"]
    await stores.tenants.remove(tenant.name)
    again = await stores.tenants.create(tenant.name, tenant.timezone)
    await stores.calls.add_cdrs(again, [cdr_record(noon, "new.1")])
    assert uniqueids(await stores.calls.cdr_page(again, day, 100)) == ["new.1"]


def test_the_cache_is_bounded_by_bytes_and_drops_the_least_recent() -> None:
    cache = PageCache(max_bytes=10)
    a, b, c = (JsonPage(b"[1,2,3,4]", 4, 10) for _ in range(3))
    cache.put("a", (4, 0), a)
    cache.put("b", (4, 0), b)  # 18 bytes > 10: "a" goes
    assert cache.get("a", (4, 0)) is None and cache.get("b", (4, 0)) is b
    assert cache.get("b", (5, 0)) is None  # another fingerprint: dropped
    assert cache.size == 0
    cache.put("c", (4, 0), JsonPage(b"x" * 11, 1, 10))  # larger than the cache: not kept
    assert cache.get("c", (4, 0)) is None
    cache.put("c", (4, 0), c)
    assert cache.size == len(c.body)


def test_a_page_is_fresh_only_under_the_stamp_it_was_last_checked_with() -> None:
    cache = PageCache(max_bytes=100)
    page = JsonPage(b"[1]", 1, 10)
    cache.put("a", (1, 0), page, stamp=(7, 0))
    assert cache.fresh("a", (7, 0)) is page
    assert cache.fresh("a", (8, 0)) is None  # a row arrived somewhere: the count decides
    assert cache.get("a", (1, 0), stamp=(8, 0)) is page  # still exact: stamped anew
    assert cache.fresh("a", (8, 0)) is page
    assert cache.fresh("a", (8, 1)) is None  # a stored row changed (revision)
    assert cache.get("a", (1, 1), stamp=(8, 1)) is None and cache.size == 0
