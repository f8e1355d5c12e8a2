"""The REST endpoints over real HTTP: exact statuses, headers and bodies (CONTRACT.md, REST).

Every test talks to a uvicorn server on a loopback port through httpx; data is seeded
through the runtime's stores, the way a PBX backend delivers it.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import ssl
import wave
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from cloudpbx.domain.records import CdrRecord, RecordingInfo, TranscriptionRecord
from cloudpbx.domain.states import Disposition
from cloudpbx.settings import Settings
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running

WARSAW = ZoneInfo("Europe/Warsaw")
# The whole calendar: every row, whatever its date (the bounds clamp, they do not fail).
ALL_TIME = {"datestart": "0001-01-01", "datestop": "9999-12-31"}
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
TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


# -- seeding helpers (also used by test_api_errors and test_api_isolation) -----------------


# httpx builds a new SSL context (tens of ms) for every client; these plain-HTTP loopback
# clients share one, which keeps the many short requests here fast.
_TLS = ssl.create_default_context()


def http(server: LiveServer, key: str | None = None) -> httpx.AsyncClient:
    """A client of `server`, sending `Authorization: Bearer key` when a key is given."""
    return server.client(key, verify=_TLS)


def local(day: date, hh: int = 12, mm: int = 0, ss: int = 0, fold: int = 0) -> datetime:
    """An aware instant given as Warsaw wall-clock time."""
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=WARSAW, fold=fold)


def today_warsaw() -> date:
    return datetime.now(WARSAW).date()


def cdr(uniqueid: str, started_at: datetime, **overrides: Any) -> CdrRecord:
    values: dict[str, Any] = {
        "started_at": started_at,
        "clid": '"Sekretariat 3" <101>',
        "src": "101",
        "dst": "105",
        "channel": "SIP/MojaCentrala-101-00000028",
        "dstchannel": "SIP/MojaCentrala-105-00000029",
        "lastapp": "Queue",
        "duration": 13,
        "billsec": 13,
        "disposition": Disposition.ANSWERED,
        "uniqueid": uniqueid,
    }
    values.update(overrides)
    return CdrRecord(**values)


async def add_cdrs(server: LiveServer, pbx: str, *records: CdrRecord) -> None:
    tenant = await server.runtime.tenants.require(pbx)
    await server.runtime.calls.add_cdrs(tenant, list(records))


def wav_bytes(frames: int = 1000, tone: bytes = b"\x01\x02") -> bytes:
    """A real (mono, 16-bit, 8 kHz) WAV file, as the PBX records them."""
    import io

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(tone * frames)
    return buffer.getvalue()


async def add_recording(
    server: LiveServer,
    pbx: str,
    uniqueid: str,
    started_at: datetime,
    *,
    data: bytes | None = None,
    path: str | None = None,
    src: str = "101",
    dst: str = "105",
) -> bytes:
    """Write the file under the PBX's recordings folder (unless `data` is None with a
    `path` given) and register it; returns the bytes written."""
    body = wav_bytes() if data is None else data
    stored = path or f"{uniqueid}.wav"
    if path is None or data is not None:
        (server.runtime.ingest.recordings_dir(pbx) / stored).write_bytes(body)
    tenant = await server.runtime.tenants.require(pbx)
    info = RecordingInfo(uniqueid, started_at, src, dst, "wav", stored, len(body))
    assert await server.runtime.calls.add_recording(tenant, info)
    return body


async def add_transcription(
    server: LiveServer,
    pbx: str,
    uniqueid: str,
    started_at: datetime,
    content: str = "Treść transkrypcji rozmowy",
    summary: str = "Podsumowanie transkrypcji",
) -> None:
    tenant = await server.runtime.tenants.require(pbx)
    record = TranscriptionRecord(uniqueid, started_at, "101", "105", content, summary)
    await server.runtime.calls.add_transcription(tenant, record)


async def get(server: LiveServer, key: str, path: str, **params: str) -> httpx.Response:
    async with http(server, key) as client:
        return await client.get(path, params=params)


def uniqueids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return [row["uniqueid"] for row in response.json()]


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's undocumented-error shape: exactly {"error": message, "code": slug}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "code"}
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    return body


Pbxes = tuple[LiveServer, Tenants]
_serial = itertools.count(1)


async def new_pbxes(server: LiveServer) -> Tenants:
    """A fresh pair on a running server: A with the SMS gateway, B without, keys as in
    conftest (a revoked one too). Tests share servers for speed, never data."""
    serial = next(_serial)
    tenants = Tenants(a_name=f"MojaCentrala{serial}", b_name=f"InnaCentrala{serial}")
    await create_tenants(server.runtime, tenants)
    return tenants


@contextlib.asynccontextmanager
async def module_server(folder: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    """A live server for a whole module (as the `live` fixture, without tenants)."""
    async with running(make_settings(folder, **overrides)) as server:
        yield server


@pytest.fixture(scope="module")
async def rest_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(tmp_path_factory.mktemp("rest")) as server:
        yield server


@pytest.fixture(scope="module")
async def capped_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """Tiny list caps, to see truncation without 10,000 rows."""
    folder = tmp_path_factory.mktemp("caps")
    async with module_server(folder, cdr_cap=5, record_cap=3, transcription_cap=2) as server:
        yield server


@pytest.fixture
async def pbxes(rest_server: LiveServer) -> Pbxes:
    return rest_server, await new_pbxes(rest_server)


@pytest.fixture
async def small_caps(capped_server: LiveServer) -> Pbxes:
    return capped_server, await new_pbxes(capped_server)


# -- /cdr: which days ----------------------------------------------------------------------


async def test_cdr_default_is_today_in_the_pbx_zone(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    today = today_warsaw()
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    await add_cdrs(
        server,
        tenants.a_name,
        cdr("1.yesterday-noon", local(yesterday)),
        cdr("2.yesterday-last", local(yesterday, 23, 59, 59)),
        cdr("3.today-first", local(today, 0, 0, 0)),
        cdr("4.today-noon", local(today)),
        cdr("5.today-last", local(today, 23, 59, 59)),
        cdr("6.tomorrow-first", local(tomorrow, 0, 0, 0)),
        cdr("7.tomorrow-noon", local(tomorrow)),
    )
    default = await get(server, tenants.a_key, "/cdr")
    assert uniqueids(default) == ["3.today-first", "4.today-noon", "5.today-last"]
    assert default.headers["x-total-count"] == "3"
    assert "x-truncated" not in default.headers
    explicit = await get(
        server, tenants.a_key, "/cdr", datestart=today.isoformat(), datestop=today.isoformat()
    )
    assert explicit.json() == default.json()
    assert [row["calldate"] for row in default.json()] == [
        f"{today} 00:00:00",
        f"{today} 12:00:00",
        f"{today} 23:59:59",
    ]


async def test_cdr_dates_are_inclusive_local_days(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    await add_cdrs(
        server,
        tenants.a_name,
        cdr("1.before", local(date(2026, 3, 9), 23, 59, 59)),
        cdr("2.first", local(date(2026, 3, 10), 0, 0, 0)),
        cdr("3.middle", local(date(2026, 3, 11))),
        cdr("4.last", local(date(2026, 3, 12), 23, 59, 59)),
        cdr("5.after", local(date(2026, 3, 13), 0, 0, 0)),
    )
    response = await get(
        server, tenants.a_key, "/cdr", datestart="2026-03-10", datestop="2026-03-12"
    )
    assert uniqueids(response) == ["2.first", "3.middle", "4.last"]
    one_day = await get(
        server, tenants.a_key, "/cdr", datestart="2026-03-12", datestop="2026-03-12"
    )
    assert uniqueids(one_day) == ["4.last"]
    # 23:30 UTC on the 9th is already the 10th in Warsaw (UTC+1 in March, before DST).
    late = datetime(2026, 3, 9, 23, 30, 0, tzinfo=UTC)
    await add_cdrs(server, tenants.a_name, cdr("6.utc-evening", late))
    shifted = await get(
        server, tenants.a_key, "/cdr", datestart="2026-03-10", datestop="2026-03-10"
    )
    assert uniqueids(shifted) == ["2.first", "6.utc-evening"]
    assert shifted.json()[1]["calldate"] == "2026-03-10 00:30:00"


async def test_cdr_one_bound_given_the_other_is_today(pbxes: Pbxes) -> None:
    """Decision (CONTRACT.md): an absent bound is today in the PBX's zone."""
    server, tenants = pbxes
    today = today_warsaw()
    days = {offset: today + timedelta(days=offset) for offset in (-3, -2, -1, 0, 1, 2)}
    await add_cdrs(
        server, tenants.a_name, *(cdr(f"{o + 10}.day", local(d)) for o, d in days.items())
    )
    since = await get(server, tenants.a_key, "/cdr", datestart=days[-2].isoformat())
    assert uniqueids(since) == ["8.day", "9.day", "10.day"]
    until = await get(server, tenants.a_key, "/cdr", datestop=days[1].isoformat())
    assert uniqueids(until) == ["10.day", "11.day"]
    # datestop alone in the past: start (today) would be after stop.
    past = await get(server, tenants.a_key, "/cdr", datestop=days[-1].isoformat())
    body = assert_json_error(past, 400, "invalid_range")
    assert "datestart" in body["error"] and "datestop" in body["error"]
    future = await get(server, tenants.a_key, "/cdr", datestart=days[2].isoformat())
    assert_json_error(future, 400, "invalid_range")


async def test_cdr_autumn_dst_day_has_25_hours(pbxes: Pbxes) -> None:
    """2026-10-25 in Warsaw: 00:00 CEST (22:00 UTC the day before) to 00:00 CET (23:00
    UTC); 02:00-03:00 happens twice and both are rendered with the same wall-clock time."""
    server, tenants = pbxes
    await add_cdrs(
        server,
        tenants.a_name,
        cdr("1.eve", datetime(2026, 10, 24, 21, 59, 59, tzinfo=UTC)),
        cdr("2.midnight", datetime(2026, 10, 24, 22, 0, 0, tzinfo=UTC)),
        cdr("4.second-0230", datetime(2026, 10, 25, 1, 30, 0, tzinfo=UTC)),
        cdr("3.first-0230", datetime(2026, 10, 25, 0, 30, 0, tzinfo=UTC)),
        cdr("5.last", datetime(2026, 10, 25, 22, 59, 59, tzinfo=UTC)),
        cdr("6.next-day", datetime(2026, 10, 25, 23, 0, 0, tzinfo=UTC)),
    )
    response = await get(
        server, tenants.a_key, "/cdr", datestart="2026-10-25", datestop="2026-10-25"
    )
    assert uniqueids(response) == ["2.midnight", "3.first-0230", "4.second-0230", "5.last"]
    assert [row["calldate"] for row in response.json()] == [
        "2026-10-25 00:00:00",
        "2026-10-25 02:30:00",
        "2026-10-25 02:30:00",
        "2026-10-25 23:59:59",
    ]
    before = await get(server, tenants.a_key, "/cdr", datestart="2026-10-24", datestop="2026-10-24")
    assert [(r["uniqueid"], r["calldate"]) for r in before.json()] == [
        ("1.eve", "2026-10-24 23:59:59")
    ]
    after = await get(server, tenants.a_key, "/cdr", datestart="2026-10-26", datestop="2026-10-26")
    assert [(r["uniqueid"], r["calldate"]) for r in after.json()] == [
        ("6.next-day", "2026-10-26 00:00:00")
    ]


async def test_cdr_spring_dst_day_has_23_hours(pbxes: Pbxes) -> None:
    """2026-03-29 in Warsaw: 00:00 CET (23:00 UTC the day before) to 00:00 CEST (22:00 UTC);
    02:00-03:00 does not exist (01:59:59 CET is followed by 03:00:00 CEST)."""
    server, tenants = pbxes
    await add_cdrs(
        server,
        tenants.a_name,
        cdr("1.eve", datetime(2026, 3, 28, 22, 59, 59, tzinfo=UTC)),
        cdr("2.midnight", datetime(2026, 3, 28, 23, 0, 0, tzinfo=UTC)),
        cdr("3.before-jump", datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)),
        cdr("4.after-jump", datetime(2026, 3, 29, 1, 0, 0, tzinfo=UTC)),
        cdr("5.last", datetime(2026, 3, 29, 21, 59, 59, tzinfo=UTC)),
        cdr("6.next-day", datetime(2026, 3, 29, 22, 0, 0, tzinfo=UTC)),
    )
    response = await get(
        server, tenants.a_key, "/cdr", datestart="2026-03-29", datestop="2026-03-29"
    )
    assert [(r["uniqueid"], r["calldate"]) for r in response.json()] == [
        ("2.midnight", "2026-03-29 00:00:00"),
        ("3.before-jump", "2026-03-29 01:59:59"),
        ("4.after-jump", "2026-03-29 03:00:00"),
        ("5.last", "2026-03-29 23:59:59"),
    ]


# -- /cdr: the rows ------------------------------------------------------------------------


async def test_cdr_rows_are_oldest_first(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    day = date(2026, 5, 4)
    await add_cdrs(
        server,
        tenants.a_name,
        cdr("c", local(day, 15)),
        cdr("a", local(day, 9)),
        cdr("d", local(day, 23, 59, 59)),
        cdr("b1", local(day, 10)),
        cdr("b2", local(day, 10)),  # same second: kept in arrival order
    )
    await add_cdrs(server, tenants.a_name, cdr("a0", local(day, 0, 0, 1)))
    response = await get(
        server, tenants.a_key, "/cdr", datestart="2026-05-04", datestop="2026-05-04"
    )
    assert uniqueids(response) == ["a0", "a", "b1", "b2", "c", "d"]


async def test_cdr_every_field_has_the_contract_type(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    day = date(2026, 7, 1)
    await add_cdrs(
        server,
        tenants.a_name,
        cdr(
            "1782900000.1",
            # 10:25:02 UTC is 12:25:02 in Warsaw (CEST): calldate is local time.
            datetime(2026, 7, 1, 10, 25, 2, tzinfo=UTC),
            clid='"Łukasz \\ "Ż" <101>',
            duration=73,
            billsec=60,
        ),
        cdr(
            "1782900000.2",
            local(day, 13),
            disposition=Disposition.NO_ANSWER,
            duration=20,
            billsec=0,
            cost=0,
            zone="",
        ),
        cdr(
            "1782900000.3",
            local(day, 14),
            src="101",
            dst="600100200",
            dstchannel="SIP/trunk-0000002a",
            lastapp="Dial",
            disposition=Disposition.BUSY,
            cost=1234,
            zone="PL-MOBILE",
        ),
    )
    response = await get(
        server, tenants.a_key, "/cdr", datestart="2026-07-01", datestop="2026-07-01"
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    rows = response.json()
    assert [list(row) for row in rows] == [CDR_FIELDS] * 3  # every field, in document order
    assert rows[0] == {
        "calldate": "2026-07-01 12:25:02",
        "clid": '"Łukasz \\ "Ż" <101>',
        "src": "101",
        "dst": "105",
        "channel": "SIP/MojaCentrala-101-00000028",
        "dstchannel": "SIP/MojaCentrala-105-00000029",
        "lastapp": "Queue",
        "duration": 73,
        "billsec": 60,
        "disposition": "ANSWERED",
        "uniqueid": "1782900000.1",
        "cost": "",
        "zone": "",
    }
    assert (rows[1]["disposition"], rows[1]["cost"], rows[1]["zone"]) == ("NO ANSWER", "0", "")
    assert (rows[2]["disposition"], rows[2]["cost"], rows[2]["zone"]) == (
        "BUSY",
        "1234",
        "PL-MOBILE",
    )
    for row in rows:
        assert type(row["duration"]) is int and type(row["billsec"]) is int
        assert 0 <= row["billsec"] <= row["duration"]
        assert isinstance(row["cost"], str) and re.fullmatch(r"|[0-9]+", row["cost"])
        assert TIMESTAMP.fullmatch(row["calldate"])
        for field in CDR_FIELDS:
            if field not in ("duration", "billsec"):
                assert isinstance(row[field], str), field


async def test_list_shapes_are_the_same_on_both_engines(tmp_path: Path, database_url: str) -> None:
    """The lists are rendered to JSON by the database: SQLite and PostgreSQL must agree."""
    suffix = tmp_path.name.replace("-", "_")[-20:]
    tenants = Tenants(a_name=f"Shape{suffix}", b_name=f"ShapeB{suffix}")
    settings = make_settings(tmp_path, database_url)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        moment = datetime(2026, 7, 1, 10, 25, 2, tzinfo=UTC)
        await add_cdrs(
            server,
            tenants.a_name,
            cdr("1.1", moment, clid='"Zażółć \\ \t" <101>', cost=None),
            cdr("1.2", moment + timedelta(seconds=1), cost=0, zone="PL"),
            cdr("1.3", moment + timedelta(seconds=2), cost=1234),
        )
        await add_recording(server, tenants.a_name, "1.1", moment)
        await add_transcription(server, tenants.a_name, "1.1", moment)
        day = {"datestart": "2026-07-01", "datestop": "2026-07-01"}
        cdrs = await get(server, tenants.a_key, "/cdr", **day)
        records = await get(server, tenants.a_key, "/record", **day)
        texts = await get(server, tenants.a_key, "/transcription", **day)
    rows = cdrs.json()
    assert [(r["cost"], r["zone"], r["duration"]) for r in rows] == [
        ("", "", 13),
        ("0", "PL", 13),
        ("1234", "", 13),
    ]
    assert rows[0]["clid"] == '"Zażółć \\ \t" <101>'
    assert rows[0]["calldate"] == "2026-07-01 12:25:02"
    assert [list(row) for row in rows] == [CDR_FIELDS] * 3
    assert records.json() == [
        {
            "uniqueid": "1.1",
            "src": "101",
            "dst": "105",
            "format": "wav",
            "date": "2026-07-01 12:25:02",
        }
    ]
    assert texts.json() == [
        {"uniqueid": "1.1", "calldate": "2026-07-01 12:25:02", "src": "101", "dst": "105"}
    ]
    for response in (cdrs, records, texts):
        assert response.headers["x-total-count"] == str(len(response.json()))


async def test_empty_lists_are_empty_arrays(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    for path in ("/cdr", "/record", "/transcription"):
        response = await get(server, tenants.a_key, path)
        assert response.status_code == 200
        assert response.content == b"[]"
        assert response.headers["x-total-count"] == "0"
        assert "x-truncated" not in response.headers


# -- caps ----------------------------------------------------------------------------------


def test_default_caps_are_the_documents() -> None:
    settings = Settings(data_dir=Path("unused"))
    assert (settings.cdr_cap, settings.record_cap) == (10_000, 5_000)


async def test_cdr_cap_keeps_the_oldest_rows_and_says_so(small_caps: Pbxes) -> None:
    server, tenants = small_caps
    day = date(2026, 4, 1)
    # Inserted newest first, so that the cap must follow time, not insertion order.
    await add_cdrs(
        server, tenants.a_name, *(cdr(f"{i}.r", local(day, 8 + i)) for i in reversed(range(8)))
    )
    period = {"datestart": "2026-04-01", "datestop": "2026-04-01"}
    response = await get(server, tenants.a_key, "/cdr", **period)
    assert uniqueids(response) == ["0.r", "1.r", "2.r", "3.r", "4.r"]
    assert response.headers["x-total-count"] == "8"
    assert response.headers["x-truncated"] == "true"
    # Exactly the cap: everything fits, no X-Truncated.
    other_day = date(2026, 4, 2)
    await add_cdrs(
        server, tenants.a_name, *(cdr(f"{i}.s", local(other_day, 8 + i)) for i in range(5))
    )
    exact = await get(server, tenants.a_key, "/cdr", datestart="2026-04-02", datestop="2026-04-02")
    assert uniqueids(exact) == [f"{i}.s" for i in range(5)]
    assert exact.headers["x-total-count"] == "5"
    assert "x-truncated" not in exact.headers


async def test_record_and_transcription_caps(small_caps: Pbxes) -> None:
    server, tenants = small_caps
    day = date(2026, 4, 3)
    for i in reversed(range(4)):
        await add_recording(server, tenants.a_name, f"{i}.rec", local(day, 8 + i))
        await add_transcription(server, tenants.a_name, f"{i}.rec", local(day, 8 + i))
    period = {"datestart": "2026-04-03", "datestop": "2026-04-03"}
    records = await get(server, tenants.a_key, "/record", **period)
    assert uniqueids(records) == ["0.rec", "1.rec", "2.rec"]
    assert (records.headers["x-total-count"], records.headers["x-truncated"]) == ("4", "true")
    texts = await get(server, tenants.a_key, "/transcription", **period)
    assert uniqueids(texts) == ["0.rec", "1.rec"]
    assert (texts.headers["x-total-count"], texts.headers["x-truncated"]) == ("4", "true")


# -- /transcription ------------------------------------------------------------------------


async def test_transcription_list_has_only_finished_transcriptions(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    today = today_warsaw()
    await add_cdrs(
        server, tenants.a_name, cdr("1.1", local(today, 9)), cdr("1.2", local(today, 10))
    )
    await add_recording(server, tenants.a_name, "1.1", local(today, 9))
    await add_recording(server, tenants.a_name, "1.2", local(today, 10))  # not transcribed
    await add_transcription(server, tenants.a_name, "1.1", local(today, 9))
    await add_transcription(
        server, tenants.a_name, "0.9", local(today, 8, 30, 5), "Dzień dobry", "Powitanie"
    )
    await add_transcription(server, tenants.a_name, "0.1", local(today - timedelta(days=1)))
    response = await get(server, tenants.a_key, "/transcription")
    assert response.status_code == 200
    assert response.headers["x-total-count"] == "2"
    assert response.json() == [
        {"uniqueid": "0.9", "calldate": f"{today} 08:30:05", "src": "101", "dst": "105"},
        {"uniqueid": "1.1", "calldate": f"{today} 09:00:00", "src": "101", "dst": "105"},
    ]
    yesterday = (today - timedelta(days=1)).isoformat()
    earlier = await get(server, tenants.a_key, "/transcription", datestart=yesterday)
    assert uniqueids(earlier) == ["0.1", "0.9", "1.1"]


async def test_transcription_detail(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    await add_transcription(
        server,
        tenants.a_name,
        "1639563902.75",
        local(date(2026, 3, 1), 11, 25, 2),
        'Treść transkrypcji rozmowy\n„cudzysłów” i "quotes"',
        "Podsumowanie transkrypcji",
    )
    response = await get(server, tenants.a_key, "/transcription/1639563902.75")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "uniqueid": "1639563902.75",
        "content": 'Treść transkrypcji rozmowy\n„cudzysłów” i "quotes"',
        "summary": "Podsumowanie transkrypcji",
    }
    # A re-run replaces the text.
    await add_transcription(
        server, tenants.a_name, "1639563902.75", local(date(2026, 3, 1), 11, 25, 2), "Nowa", "N"
    )
    again = await get(server, tenants.a_key, "/transcription/1639563902.75")
    assert again.json() == {"uniqueid": "1639563902.75", "content": "Nowa", "summary": "N"}


async def test_transcription_unknown_is_404(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    await add_cdrs(server, tenants.a_name, cdr("1.5", local(today_warsaw())))  # a call, no text
    for uniqueid in ("1.5", "9999999999.1"):
        response = await get(server, tenants.a_key, f"/transcription/{uniqueid}")
        body = assert_json_error(response, 404, "unknown_transcription")
        assert uniqueid in body["error"]


# -- /record -------------------------------------------------------------------------------


async def test_record_list(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    today = today_warsaw()
    await add_recording(server, tenants.a_name, "1552558647.372", local(today, 11, 17, 28))
    await add_recording(
        server, tenants.a_name, "1552558647.371", local(today, 9, 5, 1), src="200", dst="101"
    )
    await add_recording(server, tenants.a_name, "1552558647.370", local(today - timedelta(days=1)))
    response = await get(server, tenants.a_key, "/record")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-total-count"] == "2"
    assert response.json() == [
        {
            "uniqueid": "1552558647.371",
            "src": "200",
            "dst": "101",
            "format": "wav",
            "date": f"{today} 09:05:01",
        },
        {
            "uniqueid": "1552558647.372",
            "src": "101",
            "dst": "105",
            "format": "wav",
            "date": f"{today} 11:17:28",
        },
    ]


async def test_record_download_whole_file(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    data = await add_recording(server, tenants.a_name, "1552558647.371", local(today_warsaw()))
    response = await get(server, tenants.a_key, "/record/1552558647.371")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["content-disposition"] == 'attachment; filename="1552558647.371.wav"'
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == data
    assert response.content[:4] == b"RIFF" and response.content[8:12] == b"WAVE"


async def test_record_download_ranges(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    data = await add_recording(server, tenants.a_name, "7.1", local(today_warsaw()))
    size = len(data)

    async def fetch(range_header: str) -> httpx.Response:
        async with http(server, tenants.a_key) as client:
            return await client.get("/record/7.1", headers={"Range": range_header})

    head = await fetch("bytes=0-99")
    assert head.status_code == 206
    assert head.headers["content-range"] == f"bytes 0-99/{size}"
    assert head.headers["content-length"] == "100"
    assert head.headers["content-type"] == "audio/wav"
    assert head.content == data[:100]
    rest = await fetch("bytes=100-")
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes 100-{size - 1}/{size}"
    assert rest.content == data[100:]
    assert head.content + rest.content == data
    suffix = await fetch("bytes=-10")
    assert (suffix.status_code, suffix.content) == (206, data[-10:])
    beyond_end = await fetch(f"bytes={size - 5}-{size + 1000}")  # the end is clipped
    assert (beyond_end.status_code, beyond_end.content) == (206, data[-5:])
    for unsatisfiable in (f"bytes={size}-", "bytes=99999-100000", "bytes=-0"):
        response = await fetch(unsatisfiable)
        assert_json_error(response, 416, "range_not_satisfiable")
        assert response.headers["content-range"] == f"bytes */{size}"
    # Not a valid bytes range-set: ignored (RFC 9110 §14.2), the whole file is sent.
    for ignored in ("items=0-1", "bytes=abc", "bytes=5-2", "bytes=0-1,,", "bytes"):
        response = await fetch(ignored)
        assert (response.status_code, response.content) == (200, data), ignored


async def test_record_listed_but_file_missing(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    tenant = await server.runtime.tenants.require(tenants.a_name)
    info = RecordingInfo("5.5", local(today_warsaw()), "101", "105", "wav", "gone.wav", 10)
    assert await server.runtime.calls.add_recording(tenant, info)
    response = await get(server, tenants.a_key, "/record/5.5")
    assert_json_error(response, 404, "recording_file_missing")
    # A folder where the file should be is no file either.
    (server.runtime.ingest.recordings_dir(tenants.a_name) / "dir.wav").mkdir()
    info = RecordingInfo("5.6", local(today_warsaw()), "101", "105", "wav", "dir.wav", 10)
    assert await server.runtime.calls.add_recording(tenant, info)
    assert_json_error(
        await get(server, tenants.a_key, "/record/5.6"), 404, "recording_file_missing"
    )
    # Still listed: the list says what was recorded, the download what is on disk.
    assert uniqueids(await get(server, tenants.a_key, "/record")) == ["5.5", "5.6"]


async def test_record_unknown_is_404(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    await add_cdrs(server, tenants.a_name, cdr("6.6", local(today_warsaw())))  # not recorded
    for uniqueid in ("6.6", "1234567890.1"):
        response = await get(server, tenants.a_key, f"/record/{uniqueid}")
        body = assert_json_error(response, 404, "unknown_recording")
        assert uniqueid in body["error"]


async def test_record_stored_path_outside_its_folder_is_refused(pbxes: Pbxes) -> None:
    """Defence in depth: even a stored path cannot lead out of the PBX's folder."""
    server, tenants = pbxes
    tenant = await server.runtime.tenants.require(tenants.a_name)
    folder = server.runtime.ingest.recordings_dir(tenants.a_name)
    secret = folder.parent.parent / f"secret-{tenants.a_name}.txt"  # the data folder
    secret.write_text("root:x:0:0")
    (folder / "link.wav").symlink_to(secret)
    for uniqueid, stored in (
        ("8.1", str(secret)),
        ("8.2", f"../../{secret.name}"),
        ("8.3", "link.wav"),
    ):
        info = RecordingInfo(uniqueid, local(today_warsaw()), "101", "105", "wav", stored, 10)
        assert await server.runtime.calls.add_recording(tenant, info)
        response = await get(server, tenants.a_key, f"/record/{uniqueid}")
        assert_json_error(response, 404, "unknown_recording")
        assert b"root:" not in response.content


# -- /dial (no PBX backend here; dialling through the simulator is tested elsewhere) ------


async def test_dial_without_backend_is_action_error(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    for params in ({"cpa": "101", "cpb": "200"}, {"cpa": "101", "cpb": "+48600100200"}):
        response = await get(server, tenants.a_key, "/dial", **params)
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "Action Error"


@pytest.mark.parametrize(
    ("params", "name", "code"),
    [
        ({"cpb": "200"}, "cpa", "missing_parameter"),
        ({"cpa": "", "cpb": "200"}, "cpa", "missing_parameter"),
        ({"cpa": "101"}, "cpb", "missing_parameter"),
        ({"cpa": "101", "cpb": ""}, "cpb", "missing_parameter"),
        ({}, "cpa", "missing_parameter"),
        ({"cpa": "10a", "cpb": "200"}, "cpa", "invalid_cpa"),
        ({"cpa": "+101", "cpb": "200"}, "cpa", "invalid_cpa"),
        ({"cpa": "١٠١", "cpb": "200"}, "cpa", "invalid_cpa"),  # Arabic-Indic digits
        ({"cpa": "12345678901", "cpb": "200"}, "cpa", "invalid_cpa"),
        ({"cpa": "101", "cpb": "20O"}, "cpb", "invalid_cpb"),
        ({"cpa": "101", "cpb": "abc"}, "cpb", "invalid_cpb"),
        ({"cpa": "101", "cpb": "600 100 200"}, "cpb", "invalid_cpb"),
        ({"cpa": "101", "cpb": "1" * 33}, "cpb", "invalid_cpb"),
        ({"cpa": "104", "cpb": "104"}, "cpb", "same_number"),
    ],
)
async def test_dial_bad_parameters_are_400(
    pbxes: Pbxes, params: dict[str, str], name: str, code: str
) -> None:
    server, tenants = pbxes
    response = await get(server, tenants.a_key, "/dial", **params)
    body = assert_json_error(response, 400, code)
    assert name in body["error"]


# -- /sendSMS ------------------------------------------------------------------------------

SMS_ID = re.compile(r"[1-9][0-9]{18}")


async def send_sms(server: LiveServer, key: str, **form: str) -> httpx.Response:
    async with http(server, key) as client:
        return await client.post("/sendSMS", data=form)


async def sms_cdr(server: LiveServer, key: str, response_id: str) -> dict[str, Any]:
    rows = [r for r in (await get(server, key, "/cdr")).json() if r["uniqueid"] == response_id]
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


async def test_send_sms_queues_and_bills_a_cdr_row(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    response = await send_sms(server, tenants.a_key, to="600100200", body="Dzień dobry")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["responseId", "responseStatus", "responseErrorMessage"]
    assert SMS_ID.fullmatch(body["responseId"])
    assert body["responseStatus"] == "QUEUE"
    assert body["responseErrorMessage"] is None
    row = await sms_cdr(server, tenants.a_key, body["responseId"])
    assert list(row) == CDR_FIELDS
    assert row["dst"] == "48600100200"
    assert re.fullmatch(r"[1-9][0-9]*", row["cost"])  # a charged message costs something
    assert TIMESTAMP.fullmatch(row["calldate"])
    assert type(row["duration"]) is int and type(row["billsec"]) is int


async def test_send_sms_the_documents_curl_line(pbxes: Pbxes) -> None:
    """`curl -d "body"="tekst wysyłanej wiadomości"` sends the text unencoded (raw UTF-8,
    spaces as they are)."""
    server, tenants = pbxes
    raw = "to=600100200&body=tekst wysyłanej wiadomości&test=true".encode()
    async with http(server, tenants.a_key) as client:
        response = await client.post(
            "/sendSMS",
            content=raw,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["responseStatus"] == "QUEUE"
    row = await sms_cdr(server, tenants.a_key, response.json()["responseId"])
    assert row["cost"] == "0"


@pytest.mark.parametrize("flag", ["true", "xtruex", "istrue", "true,1"])
async def test_send_sms_test_flag_costs_nothing(pbxes: Pbxes, flag: str) -> None:
    server, tenants = pbxes
    response = await send_sms(server, tenants.a_key, to="600100200", body="test", test=flag)
    assert response.status_code == 200
    row = await sms_cdr(server, tenants.a_key, response.json()["responseId"])
    assert row["cost"] == "0"


@pytest.mark.parametrize("flag", ["", "false", "1", "yes", "TRUE", "tru"])
async def test_send_sms_without_true_is_charged(pbxes: Pbxes, flag: str) -> None:
    server, tenants = pbxes
    response = await send_sms(server, tenants.a_key, to="600100200", body="test", test=flag)
    assert response.status_code == 200
    row = await sms_cdr(server, tenants.a_key, response.json()["responseId"])
    assert row["cost"] not in ("", "0")


@pytest.mark.parametrize(
    "to", ["600100200", "48600100200", "+48600100200", "+48 600 100 200", "600-100-200"]
)
async def test_send_sms_recipient_forms(pbxes: Pbxes, to: str) -> None:
    server, tenants = pbxes
    response = await send_sms(server, tenants.a_key, to=to, body="x", test="true")
    assert response.status_code == 200, response.text
    row = await sms_cdr(server, tenants.a_key, response.json()["responseId"])
    assert row["dst"] == "48600100200"


@pytest.mark.parametrize("body", ["a" * 918, "ż" * 402], ids=["918-gsm7", "402-ucs2"])
async def test_send_sms_body_of_six_parts_is_accepted(pbxes: Pbxes, body: str) -> None:
    server, tenants = pbxes
    response = await send_sms(server, tenants.a_key, to="600100200", body=body)
    assert response.status_code == 200
    assert response.json()["responseStatus"] == "QUEUE"


@pytest.mark.parametrize(
    "form",
    [
        {"body": "no recipient"},
        {"to": "", "body": "empty recipient"},
        {"to": "60010020", "body": "eight digits"},
        {"to": "6001002001", "body": "ten digits"},
        {"to": "+49600100200", "body": "not Polish"},
        {"to": "4860010020", "body": "48 and eight digits"},
        {"to": "abcdefghi", "body": "letters"},
        {"to": "٦٠٠١٠٠٢٠٠", "body": "Arabic-Indic digits"},
        {"to": "600100200"},
        {"to": "600100200", "body": ""},
        {"to": "600100200", "body": "x" * 919},
        {"to": "600100200", "body": "ż" * 403, "test": "true"},
        {},
    ],
    ids=lambda form: (
        ",".join(f"{k}={v if len(v) < 20 else len(v)}" for k, v in form.items()) or "nothing"
    ),
)
async def test_send_sms_missing_or_invalid_is_parameter_is_missing(
    pbxes: Pbxes, form: dict[str, str]
) -> None:
    server, tenants = pbxes
    response = await send_sms(server, tenants.a_key, **form)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Parameter is missing"
    tenant = await server.runtime.tenants.require(tenants.a_name)
    assert await server.runtime.calls.count_cdrs(tenant) == 0  # nothing stored, nothing billed


async def test_send_sms_without_gateway_is_403(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    for form in ({"to": "600100200", "body": "hello"}, {}):
        response = await send_sms(server, tenants.b_key, **form)
        body = assert_json_error(response, 403, "sms_not_enabled")
        assert tenants.b_name in body["error"]
    tenant = await server.runtime.tenants.require(tenants.b_name)
    assert await server.runtime.calls.count_cdrs(tenant) == 0


# -- auth, on every endpoint ---------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/cdr"),
    ("GET", "/transcription"),
    ("GET", "/transcription/1.1"),
    ("GET", "/record"),
    ("GET", "/record/1.1"),
    ("GET", "/dial?cpa=101&cpb=200"),
    ("POST", "/sendSMS"),
]


def form(method: str) -> dict[str, str] | None:
    """A valid SMS for the POST, so that only the key can be what is wrong."""
    return {"to": "600100200", "body": "x"} if method == "POST" else None


def authorizations(tenants: Tenants) -> dict[str, tuple[dict[str, str], str]]:
    return {
        "none": ({}, "missing_key"),
        "empty": ({"Authorization": ""}, "missing_key"),
        "scheme only": ({"Authorization": "Bearer"}, "missing_key"),
        "basic": ({"Authorization": f"Basic {tenants.a_key}"}, "missing_key"),
        "key without scheme": ({"Authorization": tenants.a_key}, "missing_key"),
        "unknown key": ({"Authorization": "Bearer cpbx_not-a-key"}, "invalid_key"),
        "truncated key": ({"Authorization": f"Bearer {tenants.a_key[:-1]}"}, "invalid_key"),
        "revoked key": ({"Authorization": f"Bearer {tenants.revoked_key}"}, "invalid_key"),
        "pbxkey query": ({}, "missing_key"),  # only the WebSocket takes ?pbxkey=
    }


@pytest.fixture(scope="module")
async def auth_pbxes(rest_server: LiveServer) -> Pbxes:
    """One pair for the many auth checks (they change nothing), with A's call 1.1."""
    tenants = await new_pbxes(rest_server)
    await add_recording(rest_server, tenants.a_name, "1.1", datetime.now(UTC))
    await add_transcription(rest_server, tenants.a_name, "1.1", datetime.now(UTC))
    return rest_server, tenants


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_refuses_bad_keys(auth_pbxes: Pbxes, method: str, path: str) -> None:
    server, tenants = auth_pbxes
    async with http(server) as client:
        for label, (headers, code) in authorizations(tenants).items():
            target = path
            if label == "pbxkey query":
                target += ("&" if "?" in path else "?") + f"pbxkey={tenants.a_key}"
            response = await client.request(method, target, headers=headers, data=form(method))
            assert response.status_code == 401, (label, response.text)
            assert response.headers["www-authenticate"] == "Bearer", label
            assert_json_error(response, 401, code)
            assert b"RIFF" not in response.content and b"content" not in response.content
    tenant = await server.runtime.tenants.require(tenants.a_name)
    assert await server.runtime.calls.count_cdrs(tenant) == 0  # no SMS slipped through


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_accepts_a_valid_key(
    auth_pbxes: Pbxes, method: str, path: str
) -> None:
    """The same requests with the key (scheme case-insensitive) get past auth."""
    server, tenants = auth_pbxes
    async with http(server) as client:
        response = await client.request(
            method,
            path,
            headers={"Authorization": f"bearer  {tenants.b_key}"},
            data=form(method),
        )
    assert response.status_code != 401, response.text
