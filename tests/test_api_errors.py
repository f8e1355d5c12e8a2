"""Client mistakes over real HTTP: each gets a clear 4xx (JSON unless the document says
otherwise), never a 500, never another file's bytes, and stored data stays as it was.

One seeded server serves the whole module; after every test an autouse check counts the
stored rows and re-reads the recording.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta

import httpx
import orjson
import pytest

from tests.conftest import Tenants
from tests.live import LiveServer
from tests.test_api_rest import (
    ALL_TIME,
    add_cdrs,
    add_recording,
    add_transcription,
    assert_json_error,
    cdr,
    get,
    http,
    local,
    module_server,
    new_pbxes,
    today_warsaw,
    uniqueids,
)

LISTS = ("/cdr", "/record", "/transcription")
CDR_IDS = ["1.jan", "2.jan", "3.today", "4.today", "5.today"]


@dataclass
class Seeded:
    server: LiveServer
    tenants: Tenants
    recording: bytes

    @property
    def key(self) -> str:
        return self.tenants.a_key


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seeded]:
    async with module_server(tmp_path_factory.mktemp("errors")) as server:
        tenants = await new_pbxes(server)
        today = today_warsaw()
        jan = date(2026, 1, 15)
        await add_cdrs(
            server,
            tenants.a_name,
            cdr("1.jan", local(jan, 9)),
            cdr("2.jan", local(jan, 10)),
            cdr("3.today", local(today, 0, 0, 1)),
            cdr("4.today", local(today, 12)),
            cdr("5.today", local(today, 23, 59, 59)),
        )
        recording = await add_recording(server, tenants.a_name, "4.today", local(today, 12))
        await add_transcription(server, tenants.a_name, "4.today", local(today, 12))
        yield Seeded(server, tenants, recording)


@pytest.fixture(autouse=True)
async def data_intact(seeded: Seeded) -> AsyncIterator[None]:
    """Whatever a test sent, the stored rows and the recording are unchanged after it."""
    yield
    server, key = seeded.server, seeded.key
    tenant = await server.runtime.tenants.require(seeded.tenants.a_name)
    assert await server.runtime.calls.count_cdrs(tenant) == len(CDR_IDS)
    assert uniqueids(await get(server, key, "/cdr", **ALL_TIME)) == CDR_IDS
    assert uniqueids(await get(server, key, "/record", **ALL_TIME)) == ["4.today"]
    assert uniqueids(await get(server, key, "/transcription", **ALL_TIME)) == ["4.today"]
    assert (await get(server, key, "/record/4.today")).content == seeded.recording
    assert (await get(server, key, "/transcription/4.today")).status_code == 200


# -- dates ---------------------------------------------------------------------------------

BAD_DATES = [
    "2026-13-01",
    "2026-00-10",
    "2026-02-30",
    "2026-01-32",
    "2025-02-29",  # not a leap year
    "20260101",
    "2026-1-01",
    "2026/01/01",
    "01-01-2026",
    "yesterday",
    "today",
    "",
    " 2026-01-01",
    "2026-01-01 ",
    "2026-01-01T00:00:00",
    "2026-01-01Z",
    "+2026-01-01",
    "0000-01-01",
    "٢٠٢٦-٠١-٠١",  # Arabic-Indic digits
    "２０２６-０１-０１",  # fullwidth digits
    "2026-01-01\x00",
    "9" * 400,
]


@pytest.mark.parametrize("value", BAD_DATES, ids=[ascii(v)[:24] for v in BAD_DATES])
async def test_bad_date_is_400_naming_the_parameter(seeded: Seeded, value: str) -> None:
    for path in LISTS:
        for name, other in (("datestart", "datestop"), ("datestop", "datestart")):
            response = await get(seeded.server, seeded.key, path, **{name: value})
            body = assert_json_error(response, 400, "invalid_date")
            assert body["error"].startswith(f"{name} "), (path, body)
            assert other not in body["error"]
            # With a valid other bound, the same one is still the one named.
            response = await get(
                seeded.server, seeded.key, path, **{name: value, other: "2026-01-15"}
            )
            assert assert_json_error(response, 400, "invalid_date")["error"].startswith(name)


async def test_start_after_stop_is_400_naming_both(seeded: Seeded) -> None:
    for path in LISTS:
        response = await get(
            seeded.server, seeded.key, path, datestart="2026-01-16", datestop="2026-01-15"
        )
        body = assert_json_error(response, 400, "invalid_range")
        assert "datestart" in body["error"] and "datestop" in body["error"]
        assert "2026-01-16" in body["error"] and "2026-01-15" in body["error"]


async def test_dates_at_the_calendars_ends_mean_everything(seeded: Seeded) -> None:
    """0001-01-01 and 9999-12-31 are valid dates; their UTC edges clamp instead of a 500."""
    server, key = seeded.server, seeded.key
    assert uniqueids(await get(server, key, "/cdr", **ALL_TIME)) == CDR_IDS
    assert uniqueids(await get(server, key, "/cdr", datestart="0001-01-01")) == CDR_IDS
    today_on = await get(server, key, "/cdr", datestop="9999-12-31")
    assert uniqueids(today_on) == ["3.today", "4.today", "5.today"]
    nothing = await get(server, key, "/cdr", datestart="9999-12-31", datestop="9999-12-31")
    assert (uniqueids(nothing), nothing.headers["x-total-count"]) == ([], "0")
    first_day = await get(server, key, "/record", datestart="0001-01-01", datestop="0001-01-01")
    assert uniqueids(first_day) == []
    tomorrow = (today_warsaw() + timedelta(days=1)).isoformat()
    later = await get(server, key, "/transcription", datestart=tomorrow, datestop="9999-12-31")
    assert uniqueids(later) == []


# -- paths ---------------------------------------------------------------------------------


async def raw_get(server: LiveServer, target: str, key: str) -> tuple[int, dict[str, str], bytes]:
    """GET `target` exactly as written: httpx would resolve `..` before sending it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


PATH_TRICKS = [
    "/record/..",
    "/record/.",
    "/record/%2e%2e",
    "/record/.%2e",
    "/record/%2E%2E/%2E%2E/etc/passwd",
    "/record/../../etc/passwd",
    "/record/..%2f..%2fetc%2fpasswd",
    "/record/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/record/%2fetc%2fpasswd",
    "/record/..%5c..%5cetc%5cpasswd",
    "/record/....//....//etc/passwd",
    "/record/a..b",
    "/record/4.today/..",
    "/record/4.today%2f..",
    "/record/4.today/../../cloudpbx.db",
    "/record/4.today.wav",
    "/record/~root",
    "/record/.hidden",
    "/record/%00",
    "/record/4.today%00.wav",
    "/record/%ZZ",
    "/record/%c0%ae%c0%ae",
    "/record/" + "1" * 65,
    "/record/",
    "/transcription/..",
    "/transcription/..%2F",
    "/transcription/..%2F..%2Fcloudpbx.db",
    "/transcription/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/transcription/a..b",
    "/transcription/4.today/..",
    "/transcription/",
]


@pytest.mark.parametrize("target", PATH_TRICKS)
async def test_path_tricks_get_a_json_400_or_404(seeded: Seeded, target: str) -> None:
    status, headers, body = await raw_get(seeded.server, target, seeded.key)
    assert status in (400, 404), (status, body)
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)
    assert set(error) == {"error", "code"}
    assert error["code"] in ("invalid_uniqueid", "not_found", "unknown_recording")
    assert b"root:" not in body and b"RIFF" not in body and b"SQLite" not in body
    assert b"Tre\xc5\x9b\xc4\x87" not in body  # the transcription's text


# -- endpoints and methods -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nope", "/CDR", "/cdr/extra", "/api/cdr", "/records", "/ws", "/sendsms", "/"]
)
async def test_unknown_endpoint_is_404_json(seeded: Seeded, path: str) -> None:
    for key in (seeded.key, ""):
        async with http(seeded.server, key or None) as client:
            response = await client.get(path)
        body = assert_json_error(response, 404, "not_found")
        assert body["error"] == "no such endpoint"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/cdr", "GET"),
        ("PUT", "/cdr", "GET"),
        ("DELETE", "/cdr", "GET"),
        ("POST", "/transcription", "GET"),
        ("DELETE", "/transcription/4.today", "GET"),
        ("POST", "/record", "GET"),
        ("DELETE", "/record/4.today", "GET"),
        ("PUT", "/record/4.today", "GET"),
        ("POST", "/dial?cpa=101&cpb=200", "GET"),
        ("GET", "/sendSMS", "POST"),
        ("PUT", "/sendSMS", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_wrong_method_is_405_json(
    seeded: Seeded, method: str, path: str, allowed: str
) -> None:
    async with http(seeded.server, seeded.key) as client:
        response = await client.request(method, path)
    body = assert_json_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed
    assert method in body["error"] and allowed in body["error"]


# -- bodies and parameters that are not what they should be --------------------------------


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("multipart/form-data", b"garbage"),
        ("multipart/form-data; boundary=", b"garbage"),
        ("multipart/form-data; boundary=x", b"--x\r\nnot a part"),
        ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(1001))),
    ],
    ids=["no-boundary", "empty-boundary", "broken-part", "too-many-fields"],
)
async def test_unparseable_sms_form_is_400_json(
    seeded: Seeded, content_type: str, content: bytes
) -> None:
    async with http(seeded.server, seeded.key) as client:
        response = await client.post(
            "/sendSMS", content=content, headers={"Content-Type": content_type}
        )
    assert response.status_code == 400, response.text
    if response.headers["content-type"] == "application/json":
        assert_json_error(response, 400, "bad_request")
    else:  # the parser gave up quietly: no fields, the document's own answer
        assert response.text == "Parameter is missing"


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("application/json", b'{"to": "600100200", "body": "x"}'),
        ("text/plain", b"to=600100200&body=x"),
        ("application/x-www-form-urlencoded", b"%%%%=&&&=="),
        ("application/x-www-form-urlencoded", b"to=600100200&body=" + b"x" * 1025),
        ("application/x-www-form-urlencoded", b"to=%00600100200&body=x"),
        ("application/x-www-form-urlencoded", b"to=600100200%3B&body=x"),
        ("", b""),
    ],
    ids=["json", "text", "percent-garbage", "long-body", "nul", "semicolon", "empty"],
)
async def test_sms_without_usable_fields_is_parameter_is_missing(
    seeded: Seeded, content_type: str, content: bytes
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    async with http(seeded.server, seeded.key) as client:
        response = await client.post("/sendSMS", content=content, headers=headers)
    assert (response.status_code, response.text) == (400, "Parameter is missing")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("cpa=%00&cpb=200", "invalid_cpa"),
        ("cpa=101%0A&cpb=200", "invalid_cpa"),
        ("cpa=" + "1" * 5000 + "&cpb=200", "invalid_cpa"),
        ("cpa=-1&cpb=200", "invalid_cpa"),
        ("cpa=1e3&cpb=200", "invalid_cpa"),
        ("cpa=101&cpb=%00", "invalid_cpb"),
        ("cpa=101&cpb=200%0D%0AX-Injected:%201", "invalid_cpb"),
        ("cpa=101&cpb=++48600100200", "invalid_cpb"),
        ("cpa=101&cpb=200&cpb=", "missing_parameter"),  # the last value counts
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else None,
)
async def test_dial_odd_parameters_are_400(seeded: Seeded, query: str, code: str) -> None:
    async with http(seeded.server, seeded.key) as client:
        response = await client.get(f"/dial?{query}")
    assert_json_error(response, 400, code)
    assert "x-injected" not in response.headers


async def test_unknown_query_parameters_are_ignored(seeded: Seeded) -> None:
    response = await get(seeded.server, seeded.key, "/cdr", datestart="2026-01-15", foo="bar")
    assert uniqueids(response) == ["1.jan", "2.jan", "3.today", "4.today", "5.today"]


async def test_client_mistakes_never_reach_the_500_handler(seeded: Seeded) -> None:
    """A burst of the above, concurrently: all 4xx, and the server still answers."""
    targets = [f"/cdr?datestart={value}" for value in ("x", "2026-02-30", "")] + [
        "/record/..%2f",
        "/transcription/%2e%2e",
        "/nope",
        "/dial?cpa=x&cpb=1",
    ]
    async with http(seeded.server, seeded.key) as client:
        responses = await asyncio.gather(*(client.get(t) for t in targets * 5))
    assert all(400 <= r.status_code < 500 for r in responses), [r.status_code for r in responses]
    health = await _healthz(seeded.server)
    assert health.json()["status"] == "ok"


async def _healthz(server: LiveServer) -> httpx.Response:
    async with http(server) as client:
        return await client.get("/healthz")
