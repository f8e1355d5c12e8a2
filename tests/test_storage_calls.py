"""CallStore on SQLite and PostgreSQL: CDR pages rendered to JSON by the database,
recordings, transcriptions, and isolation between PBXes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Text, cast, func, select

from cloudpbx.domain.dates import DateRange
from cloudpbx.domain.records import RecordingInfo, TranscriptionRecord
from cloudpbx.domain.states import Disposition
from cloudpbx.storage.json_rows import json_array_of, ordered
from cloudpbx.storage.tables import cdr
from cloudpbx.storage.tenants import Tenant
from tests.test_storage_support import Stores, at, cdr_record, open_stores

CDR_FIELDS = [
    "calldate",
    "clid",
    "src",
    "dst",
    "channel",
    "dstchannel",
    "lastapp",
    "duration",
    "billsec",
    "disposition",
    "uniqueid",
    "cost",
    "zone",
]
INT_FIELDS = {"duration", "billsec"}
POLISH = "Zażółć gęślą jaźń"


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    async with open_stores(database_url) as opened:
        yield opened


def days(tenant: Tenant, start: str, stop: str | None = None) -> DateRange:
    return DateRange(date.fromisoformat(start), date.fromisoformat(stop or start), tenant.zone)


def parse(body: bytes) -> list[dict[str, object]]:
    """Parse keeping the JSON's own key order (json.loads keeps it in dicts)."""
    rows = json.loads(body)
    assert isinstance(rows, list)
    return rows


# -- CDR -----------------------------------------------------------------------------------


async def test_cdr_page_json_shape_and_types(stores: Stores) -> None:
    tenant = await stores.tenant()
    await stores.calls.add_cdrs(
        tenant,
        [
            cdr_record(at("2025-06-10 08:00:00"), "1749542400.1", cost=None),
            cdr_record(
                at("2025-06-10 08:05:00"),
                "1749542700.2",
                cost=1234,
                zone="Polska komórkowe",
                duration=65,
                billsec=0,
                disposition=Disposition.NO_ANSWER,
            ),
            cdr_record(at("2025-06-10 08:06:00"), "1749542760.3", cost=0),
        ],
    )
    page = await stores.calls.cdr_page(tenant, days(tenant, "2025-06-10"), 10_000)
    rows = parse(page.body)
    assert page.total == 3 and not page.truncated
    assert [list(row) for row in rows] == [CDR_FIELDS] * 3  # exact field order
    for row in rows:
        for field, value in row.items():
            expected = int if field in INT_FIELDS else str
            assert type(value) is expected, (field, value)
    assert [row["cost"] for row in rows] == ["", "1234", "0"]
    assert rows[1] == {
        "calldate": "2025-06-10 10:05:00",  # Warsaw, CEST
        "clid": '"Jan Kowalski" <101>',
        "src": "101",
        "dst": "102",
        "channel": "SIP/Pbx-101-00000001",
        "dstchannel": "SIP/Pbx-102-00000002",
        "lastapp": "Dial",
        "duration": 65,
        "billsec": 0,
        "disposition": "NO ANSWER",
        "uniqueid": "1749542700.2",
        "cost": "1234",
        "zone": "Polska komórkowe",
    }


async def test_cdr_page_empty(stores: Stores) -> None:
    tenant = await stores.tenant()
    page = await stores.calls.cdr_page(tenant, days(tenant, "2025-06-10"), 100)
    assert json.loads(page.body) == [] and page.total == 0 and not page.truncated


async def test_cdr_order_oldest_first_ties_by_insertion(stores: Stores) -> None:
    tenant = await stores.tenant()
    same = at("2025-06-10 12:00:00")
    # Inserted out of time order, in two batches, with three rows at the same instant.
    await stores.calls.add_cdrs(
        tenant,
        [
            cdr_record(at("2025-06-10 13:00:00"), "late"),
            cdr_record(same, "tie-1"),
            cdr_record(at("2025-06-10 06:00:00"), "early"),
        ],
    )
    await stores.calls.add_cdrs(
        tenant, [cdr_record(same, "tie-2"), cdr_record(same + timedelta(microseconds=1), "after")]
    )
    await stores.calls.add_cdrs(tenant, [cdr_record(same, "tie-3")])
    page = await stores.calls.cdr_page(tenant, days(tenant, "2025-06-10"), 100)
    assert [row["uniqueid"] for row in parse(page.body)] == [
        "early",
        "tie-1",
        "tie-2",
        "tie-3",
        "after",
        "late",
    ]


async def test_cdr_cap_and_total(stores: Stores) -> None:
    tenant = await stores.tenant()
    start = at("2025-06-10 08:00:00")
    await stores.calls.add_cdrs(
        tenant, [cdr_record(start + timedelta(minutes=i), f"u{i}") for i in range(7)]
    )
    period = days(tenant, "2025-06-10")
    capped = await stores.calls.cdr_page(tenant, period, 3)
    assert [row["uniqueid"] for row in parse(capped.body)] == ["u0", "u1", "u2"]  # the oldest
    assert (capped.total, capped.cap, capped.truncated) == (7, 3, True)
    exact = await stores.calls.cdr_page(tenant, period, 7)
    assert len(parse(exact.body)) == 7 and not exact.truncated
    assert await stores.calls.count_cdrs(tenant) == 7


async def test_cdr_range_and_calldate_in_warsaw(stores: Stores) -> None:
    tenant = await stores.tenant("Warsaw", "Europe/Warsaw")
    await stores.calls.add_cdrs(
        tenant,
        [
            # 2025-01-01 23:30 UTC is already 2 January in Warsaw (CET, +1).
            cdr_record(at("2025-01-01 22:59:59"), "jan1-last"),
            cdr_record(at("2025-01-01 23:30:00"), "jan2-first"),
            cdr_record(at("2025-01-02 22:59:59"), "jan2-last"),
            cdr_record(at("2025-01-02 23:00:00"), "jan3-first"),
            # Summer time started 2025-03-30 at 01:00 UTC: 01:30 UTC is 03:30 CEST (+2).
            cdr_record(at("2025-03-30 00:30:00"), "dst-before"),
            cdr_record(at("2025-03-30 01:30:00"), "dst-after"),
        ],
    )
    jan2 = parse((await stores.calls.cdr_page(tenant, days(tenant, "2025-01-02"), 100)).body)
    assert [(r["uniqueid"], r["calldate"]) for r in jan2] == [
        ("jan2-first", "2025-01-02 00:30:00"),
        ("jan2-last", "2025-01-02 23:59:59"),
    ]
    both = parse(
        (await stores.calls.cdr_page(tenant, days(tenant, "2025-01-01", "2025-01-03"), 100)).body
    )
    assert [r["uniqueid"] for r in both] == ["jan1-last", "jan2-first", "jan2-last", "jan3-first"]
    dst = parse((await stores.calls.cdr_page(tenant, days(tenant, "2025-03-30"), 100)).body)
    assert [(r["uniqueid"], r["calldate"]) for r in dst] == [
        ("dst-before", "2025-03-30 01:30:00"),
        ("dst-after", "2025-03-30 03:30:00"),
    ]


async def test_cdr_range_and_calldate_in_new_york(stores: Stores) -> None:
    tenant = await stores.tenant("NewYork", "America/New_York")
    assert tenant.zone == ZoneInfo("America/New_York")
    await stores.calls.add_cdrs(
        tenant,
        [
            # 2025-01-02 03:00 UTC is still 1 January in New York (EST, -5).
            cdr_record(at("2025-01-02 03:00:00"), "jan1-evening"),
            cdr_record(at("2025-01-02 05:00:00"), "jan2-midnight"),
            # Summer time: 2025-07-04 12:00 UTC is 08:00 EDT (-4).
            cdr_record(at("2025-07-04 12:00:00"), "july"),
        ],
    )
    jan1 = parse((await stores.calls.cdr_page(tenant, days(tenant, "2025-01-01"), 100)).body)
    assert [(r["uniqueid"], r["calldate"]) for r in jan1] == [
        ("jan1-evening", "2025-01-01 22:00:00")
    ]
    jan2 = parse((await stores.calls.cdr_page(tenant, days(tenant, "2025-01-02"), 100)).body)
    assert [(r["uniqueid"], r["calldate"]) for r in jan2] == [
        ("jan2-midnight", "2025-01-02 00:00:00")
    ]
    july = parse((await stores.calls.cdr_page(tenant, days(tenant, "2025-07-04"), 100)).body)
    assert [r["calldate"] for r in july] == ["2025-07-04 08:00:00"]


async def test_cdr_strings_round_trip_exactly(stores: Stores) -> None:
    tenant = await stores.tenant()
    tricky = {
        "clid": f'"{POLISH} \\"Szef\\"" <+48 600-100-200>',
        "src": "back\\slash\\",
        "dst": "quote\"'apostrophe",
        "channel": "tab\tnew\nline\rcr",
        "dstchannel": "emoji 📞 and \u2028 separator",
        "lastapp": "</script><b>",
        "zone": "strefa ł € ü",
        "uniqueid": "1749542400.77",
    }
    await stores.calls.add_cdrs(tenant, [cdr_record(at("2025-06-10 08:00:00"), **tricky)])
    (row,) = parse((await stores.calls.cdr_page(tenant, days(tenant, "2025-06-10"), 10)).body)
    for field, value in tricky.items():
        assert row[field] == value, field
    assert json.loads(json.dumps(row)) == row  # valid JSON, nothing lost


async def test_cdr_page_is_the_bytes_the_database_rendered_before(stores: Stores) -> None:
    """Pages joined from the rows' stored JSON are what `json_group_array(json_object(..))`
    sent before migration 0004 (on PostgreSQL, whose json_agg spaced its output, the same
    JSON, now compact)."""
    tenant = await stores.tenant()
    start = at("2025-06-10 08:00:00")
    await stores.calls.add_cdrs(
        tenant,
        [
            cdr_record(start, "1.1", clid=f'"{POLISH}" <101>', cost=16, zone="komórkowe"),
            cdr_record(start, "1.2", channel="tab\tnew\nline \x01 📞 \u2028", cost=None),
            cdr_record(start + timedelta(seconds=1), "1.3", dst='"q" \\ /'),
        ],
    )
    period = days(tenant, "2025-06-10")
    page = await stores.calls.cdr_page(tenant, period, 10)
    low, high = period.utc_bounds()
    cost = func.coalesce(cast(cdr.c.cost, Text), "").label("cost")
    rows = (
        select(
            *(cost if name == "cost" else cdr.c[name] for name in CDR_FIELDS),
            *ordered([cdr.c.started_at, cdr.c.id]),
        )
        .where(cdr.c.pbx_id == tenant.id, cdr.c.started_at >= low, cdr.c.started_at < high)
        .order_by(cdr.c.started_at, cdr.c.id)
    )
    dialect = stores.engine.dialect.name
    async with stores.engine.connect() as conn:
        before = (await conn.execute(json_array_of(dialect, rows))).scalar_one()
    assert parse(page.body) == parse(before.encode()) and len(parse(page.body)) == 3
    if dialect == "sqlite":
        assert page.body == before.encode()


async def test_find_cdr(stores: Stores) -> None:
    tenant = await stores.tenant()
    other = await stores.tenant()
    await stores.calls.add_cdrs(
        tenant, [cdr_record(at("2025-06-10 08:00:00"), "u1", cost=16, clid=POLISH)]
    )
    found = await stores.calls.find_cdr(tenant, "u1")
    assert found is not None
    assert found["uniqueid"] == "u1" and found["clid"] == POLISH and found["cost"] == 16
    assert found["calldate"] == "2025-06-10 10:00:00"
    assert await stores.calls.find_cdr(tenant, "nope") is None
    assert await stores.calls.find_cdr(other, "u1") is None


# -- recordings ----------------------------------------------------------------------------


def recording(
    uniqueid: str,
    when: str,
    path: str = "",
    src: str = "101",
    format: str = "wav",
    size: int = 4096,
) -> RecordingInfo:
    return RecordingInfo(uniqueid, at(when), src, "102", format, path or f"{uniqueid}.wav", size)


async def test_recording_page_get_and_duplicates(stores: Stores) -> None:
    tenant = await stores.tenant()
    first = recording("r2", "2025-06-10 09:00:00", path="first.wav", src=POLISH)
    assert await stores.calls.add_recording(tenant, first)
    assert await stores.calls.add_recording(tenant, recording("r1", "2025-06-10 08:00:00"))
    assert await stores.calls.add_recording(
        tenant, recording("r3", "2025-06-11 08:00:00", format="mp3")
    )
    # A second announcement of the same call is refused; the first row is kept.
    again = recording("r2", "2025-06-10 09:30:00", path="second.wav", size=1)
    assert await stores.calls.add_recording(tenant, again) is False

    page = await stores.calls.recording_page(tenant, days(tenant, "2025-06-10"), 5_000)
    rows = parse(page.body)
    assert page.total == 2 and not page.truncated
    assert [list(row) for row in rows] == [["uniqueid", "src", "dst", "format", "date"]] * 2
    assert rows == [
        {
            "uniqueid": "r1",
            "src": "101",
            "dst": "102",
            "format": "wav",
            "date": "2025-06-10 10:00:00",
        },
        {
            "uniqueid": "r2",
            "src": POLISH,
            "dst": "102",
            "format": "wav",
            "date": "2025-06-10 11:00:00",
        },
    ]
    capped = await stores.calls.recording_page(tenant, days(tenant, "2025-06-10", "2025-06-11"), 1)
    assert [r["uniqueid"] for r in parse(capped.body)] == ["r1"] and capped.truncated

    stored = await stores.calls.get_recording(tenant, "r2")
    assert stored == first  # path, size and instant of the first announcement
    assert stored is not None and stored.started_at.utcoffset() == timedelta(0)
    assert await stores.calls.get_recording(tenant, "missing") is None


# -- transcriptions ------------------------------------------------------------------------


def transcript(uniqueid: str, when: str, content: str, summary: str = "") -> TranscriptionRecord:
    return TranscriptionRecord(uniqueid, at(when), "101", "102", content, summary)


async def test_transcription_add_replace_page_get(stores: Stores) -> None:
    tenant = await stores.tenant()
    await stores.calls.add_transcription(tenant, transcript("t2", "2025-06-10 09:00:00", "drugi"))
    await stores.calls.add_transcription(
        tenant, transcript("t1", "2025-06-10 08:00:00", f'{POLISH} "cytat" \\', "krótko")
    )
    assert await stores.calls.get_transcription(tenant, "t1") == {
        "uniqueid": "t1",
        "content": f'{POLISH} "cytat" \\',
        "summary": "krótko",
    }
    # Re-running the transcription replaces the text; it stays one row.
    await stores.calls.add_transcription(
        tenant, transcript("t1", "2025-06-10 08:00:00", "poprawiony", "nowe")
    )
    assert await stores.calls.get_transcription(tenant, "t1") == {
        "uniqueid": "t1",
        "content": "poprawiony",
        "summary": "nowe",
    }
    page = await stores.calls.transcription_page(tenant, days(tenant, "2025-06-10"), 10_000)
    rows = parse(page.body)
    assert page.total == 2
    assert rows == [
        {"uniqueid": "t1", "calldate": "2025-06-10 10:00:00", "src": "101", "dst": "102"},
        {"uniqueid": "t2", "calldate": "2025-06-10 11:00:00", "src": "101", "dst": "102"},
    ]
    assert [list(row) for row in rows] == [["uniqueid", "calldate", "src", "dst"]] * 2
    assert await stores.calls.get_transcription(tenant, "nope") is None


async def test_concurrent_transcriptions_of_one_call(stores: Stores) -> None:
    import asyncio

    tenant = await stores.tenant()
    await asyncio.gather(
        *(
            stores.calls.add_transcription(
                tenant, transcript("same", "2025-06-10 08:00:00", f"wersja {i}")
            )
            for i in range(8)
        )
    )
    page = await stores.calls.transcription_page(tenant, days(tenant, "2025-06-10"), 10)
    assert page.total == 1


# -- isolation -----------------------------------------------------------------------------


async def test_every_method_is_isolated_per_pbx(stores: Stores) -> None:
    a = await stores.tenant("A")
    b = await stores.tenant("B")
    when = "2025-06-10 08:00:00"
    # The same uniqueid in both PBXes: each sees only its own row.
    for tenant, text in ((a, "of A"), (b, "of B")):
        await stores.calls.add_cdrs(tenant, [cdr_record(at(when), "shared", clid=text)])
        assert await stores.calls.add_recording(tenant, recording("shared", when, src=text))
        await stores.calls.add_transcription(tenant, transcript("shared", when, text))
    await stores.calls.add_cdrs(a, [cdr_record(at(when), "only-a")])
    assert await stores.calls.add_recording(a, recording("only-a", when))
    await stores.calls.add_transcription(a, transcript("only-a", when, "a"))

    period_a, period_b = days(a, "2025-06-10"), days(b, "2025-06-10")
    cdr_b = parse((await stores.calls.cdr_page(b, period_b, 100)).body)
    assert [(r["uniqueid"], r["clid"]) for r in cdr_b] == [("shared", "of B")]
    assert (await stores.calls.cdr_page(a, period_a, 100)).total == 2
    rec_b = parse((await stores.calls.recording_page(b, period_b, 100)).body)
    assert [(r["uniqueid"], r["src"]) for r in rec_b] == [("shared", "of B")]
    tr_b = parse((await stores.calls.transcription_page(b, period_b, 100)).body)
    assert [r["uniqueid"] for r in tr_b] == ["shared"]

    assert await stores.calls.find_cdr(b, "only-a") is None
    assert await stores.calls.get_recording(b, "only-a") is None
    assert await stores.calls.get_transcription(b, "only-a") is None
    found = await stores.calls.find_cdr(b, "shared")
    assert found is not None and found["clid"] == "of B"
    rec = await stores.calls.get_recording(b, "shared")
    assert rec is not None and rec.src == "of B"
    assert await stores.calls.get_transcription(b, "shared") == {
        "uniqueid": "shared",
        "content": "of B",
        "summary": "",
    }
    assert await stores.calls.count_cdrs(b) == 1
