"""The lists over real HTTP as a poller sees them: gzip on request, strong ETags with
304 Not Modified, HEAD beside every GET (docs/decisions.md, "Lists: compression, ETag")."""

from __future__ import annotations

import gzip
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio.to_thread
import httpx
import orjson
import pytest

from cloudpbx.domain.dates import date_range
from cloudpbx.domain.records import RecordingInfo, TranscriptionRecord
from tests.live import LiveServer
from tests.test_api_rest import (
    Pbxes,
    add_cdrs,
    add_recording,
    add_transcription,
    cdr,
    http,
    local,
    module_server,
    new_pbxes,
    today_warsaw,
)
from tests.test_storage_support import open_stores

LISTS = ("/cdr", "/record", "/transcription")


@pytest.fixture(scope="module")
async def list_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    async with module_server(tmp_path_factory.mktemp("lists")) as server:
        yield server


@pytest.fixture
async def pbxes(list_server: LiveServer) -> Pbxes:
    return list_server, await new_pbxes(list_server)


async def seeded(pbxes: Pbxes, rows: int = 40) -> dict[str, str]:
    """Today and yesterday with `rows` calls each (POLISH text, so bytes are not ASCII),
    and one recording and transcription today; returns the query of yesterday and today."""
    server, tenants = pbxes
    today = today_warsaw()
    yesterday = today - timedelta(days=1)
    for day in (yesterday, today):
        records = [
            cdr(f"{day:%Y%m%d}.{i}", local(day, 0, 10, i), clid=f'"Zażółć {i}" <10{i % 10}>')
            for i in range(rows)
        ]
        await add_cdrs(server, tenants.a_name, *records)
    await add_recording(server, tenants.a_name, "rec.1", local(today, 0, 5))
    await add_transcription(server, tenants.a_name, "rec.1", local(today, 0, 5))
    return {"yesterday": yesterday.isoformat(), "today": today.isoformat()}


def plain_client(server: LiveServer, key: str) -> httpx.AsyncClient:
    """A client that sends no Accept-Encoding at all, like the provider's PHP sample."""
    client = http(server, key)
    del client.headers["accept-encoding"]
    return client


async def test_gzip_and_plain_decode_to_the_same_json(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    days = await seeded(pbxes)
    for path in LISTS:
        params = {"datestart": days["yesterday"], "datestop": days["today"]}
        async with plain_client(server, tenants.a_key) as client:
            plain = await client.get(path, params=params)
        async with http(server, tenants.a_key) as client:
            zipped = await client.get(
                path, params=params, headers={"Accept-Encoding": "br;q=1, gzip;q=0.5"}
            )
            refused = await client.get(
                path, params=params, headers={"Accept-Encoding": "gzip;q=0, identity"}
            )
        assert plain.status_code == zipped.status_code == refused.status_code == 200
        assert "content-encoding" not in plain.headers
        assert "content-encoding" not in refused.headers and refused.content == plain.content
        assert zipped.headers["content-encoding"] == "gzip"
        assert plain.headers["vary"] == zipped.headers["vary"] == "Accept-Encoding"
        assert plain.headers["x-total-count"] == zipped.headers["x-total-count"]
        if path == "/cdr":  # httpx decoded it; what came on the wire was smaller
            assert int(zipped.headers["content-length"]) < len(plain.content) / 3
        assert orjson.loads(zipped.content) == orjson.loads(plain.content)
        assert plain.content.startswith(b"[") and len(orjson.loads(plain.content)) >= 1


async def test_the_plain_body_is_the_bytes_of_the_page(pbxes: Pbxes) -> None:
    """No Accept-Encoding: exactly the page's bytes, Content-Length and no encoding."""
    server, tenants = pbxes
    days = await seeded(pbxes)
    tenant = await server.runtime.tenants.require(tenants.a_name)
    period = date_range(days["today"], days["today"], tenant.zone)
    page = await server.runtime.calls.cdr_page(tenant, period, server.runtime.settings.cdr_cap)
    async with plain_client(server, tenants.a_key) as client:
        response = await client.get("/cdr", params={"datestart": days["today"]})
    assert response.content == page.body
    assert response.headers["content-length"] == str(len(page.body))
    assert response.headers["content-type"] == "application/json"


async def test_a_cached_page_is_compressed_once(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    days = await seeded(pbxes)
    params = {"datestart": days["yesterday"], "datestop": days["yesterday"]}
    wire: list[bytes] = []
    async with http(server, tenants.a_key) as client:
        for _ in range(2):
            async with client.stream("GET", "/cdr", params=params) as response:
                assert response.headers["content-encoding"] == "gzip"
                wire.append(b"".join([chunk async for chunk in response.aiter_raw()]))
    tenant = await server.runtime.tenants.require(tenants.a_name)
    period = date_range(days["yesterday"], days["yesterday"], tenant.zone)
    page = await server.runtime.calls.cdr_page(tenant, period, server.runtime.settings.cdr_cap)
    # Both answers are the one gzip body kept with the cached page.
    assert wire[0] == wire[1] == page.derived["gzip"]
    assert gzip.decompress(wire[0]) == page.body


async def test_304_round_trip(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    days = await seeded(pbxes)
    for path in LISTS:
        params = {"datestart": days["yesterday"], "datestop": days["today"]}
        async with http(server, tenants.a_key) as client:
            first = await client.get(path, params=params, headers={"Accept-Encoding": "identity"})
            tag = first.headers["etag"]
            assert tag.startswith('"') and tag.endswith('"') and not tag.startswith('"W/')
            again = await client.get(path, params=params, headers={"If-None-Match": tag})
            weak_list = await client.get(
                path, params=params, headers={"If-None-Match": f'"other", W/{tag}'}
            )
            stale = await client.get(path, params=params, headers={"If-None-Match": '"other"'})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == tag[:-1] + '-gzip"'  # httpx asks for gzip
        assert weak_list.status_code == 304
        assert stale.status_code == 200 and stale.headers["etag"] == tag[:-1] + '-gzip"'
        assert orjson.loads(stale.content) == orjson.loads(first.content)
        async with http(server, tenants.a_key) as client:  # the gzip tag validates too
            gz = await client.get(
                path, params=params, headers={"If-None-Match": again.headers["etag"]}
            )
        assert gz.status_code == 304


async def test_a_new_call_changes_todays_etag_and_not_yesterdays(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    days = await seeded(pbxes)

    async def tags() -> dict[str, str]:
        out = {}
        async with http(server, tenants.a_key) as client:
            for name, day in days.items():
                response = await client.get("/cdr", params={"datestart": day, "datestop": day})
                assert response.status_code == 200
                out[name] = response.headers["etag"]
        return out

    before = await tags()
    assert before["today"] != before["yesterday"]
    await add_cdrs(server, tenants.a_name, cdr("new.1", local(today_warsaw(), 0, 30)))
    after = await tags()
    assert after["yesterday"] == before["yesterday"]
    assert after["today"] != before["today"]
    async with http(server, tenants.a_key) as client:
        today = await client.get(
            "/cdr", params={"datestart": days["today"]}, headers={"If-None-Match": before["today"]}
        )
    assert today.status_code == 200 and today.json()[-1]["uniqueid"] == "new.1"


async def test_etags_are_per_pbx(pbxes: Pbxes) -> None:
    """Another PBX's empty day never validates against this PBX's tag (and vice versa)."""
    server, tenants = pbxes
    days = await seeded(pbxes)
    params = {"datestart": days["today"]}
    async with http(server, tenants.a_key) as client:
        tag = (await client.get("/cdr", params=params)).headers["etag"]
    async with http(server, tenants.b_key) as client:
        other = await client.get("/cdr", params=params, headers={"If-None-Match": tag})
    assert other.status_code == 200 and other.json() == []


async def test_head_answers_wherever_get_does(pbxes: Pbxes) -> None:
    server, tenants = pbxes
    days = await seeded(pbxes)
    params = {"datestart": days["today"]}
    paths = [*LISTS, "/transcription/rec.1", "/record/rec.1"]
    async with http(server, tenants.a_key) as client:
        for path in paths:
            got = await client.get(path, params=params)
            head = await client.head(path, params=params)
            assert got.status_code == head.status_code == 200, path
            assert head.content == b""
            for name in ("content-length", "content-type", "etag", "x-total-count"):
                assert head.headers.get(name) == got.headers.get(name), (path, name)
        missing = await client.head("/transcription/none.1")
    assert missing.status_code == 404


async def test_head_sends_no_body_on_the_wire(pbxes: Pbxes) -> None:
    """httpx never reads a HEAD body; a raw socket sees that the server sends none."""
    server, tenants = pbxes
    days = await seeded(pbxes)
    host, port = server.url.removeprefix("http://").split(":")
    request = (
        f"HEAD /cdr?datestart={days['today']} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {tenants.a_key}\r\nConnection: close\r\n\r\n"
    ).encode()

    def exchange() -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    raw = await anyio.to_thread.run_sync(exchange)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: " in head.lower() and body == b""


async def test_rows_from_another_connection_change_the_small_lists_and_their_etags(
    pbxes: Pbxes,
) -> None:
    """/record and /transcription pages are cached per PBX revision (storage/revisions.py):
    a recording added and a transcription re-run (a row changed in place) through another
    engine, as another process would, change both answers and their tags at once."""
    server, tenants = pbxes
    days = await seeded(pbxes)
    params = {"datestart": days["today"]}
    paths = ("/record", "/transcription")

    async def answers(**headers: str) -> dict[str, httpx.Response]:
        async with plain_client(server, tenants.a_key) as client:
            return {path: await client.get(path, params=params, headers=headers) for path in paths}

    before = await answers()
    for path, response in (await answers()).items():  # served again, from the cache
        assert response.content == before[path].content
        assert response.headers["etag"] == before[path].headers["etag"]
    async with open_stores(server.runtime.settings.effective_database_url) as other:
        tenant = await other.tenants.require(tenants.a_name)
        moment = local(today_warsaw(), 0, 20)
        await other.calls.add_recording(
            tenant, RecordingInfo("rec.2", moment, "101", "105", "wav", "rec.2.wav", 10)
        )
        rerun = TranscriptionRecord("rec.1", local(today_warsaw(), 0, 5), "999", "105", "t", "s")
        await other.calls.add_transcription(tenant, rerun)
    for path in paths:
        old_tag = before[path].headers["etag"]
        async with plain_client(server, tenants.a_key) as client:
            plain = await client.get(path, params=params, headers={"If-None-Match": old_tag})
            same = await client.get(
                path, params=params, headers={"If-None-Match": plain.headers["etag"]}
            )
        async with http(server, tenants.a_key) as client:
            zipped = await client.get(path, params=params)
        assert plain.status_code == 200 and plain.headers["etag"] != old_tag, path
        assert same.status_code == 304 and same.content == b""
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["etag"] == plain.headers["etag"][:-1] + '-gzip"'
        assert orjson.loads(zipped.content) == orjson.loads(plain.content)
    async with plain_client(server, tenants.a_key) as client:
        listed = {path: (await client.get(path, params=params)).json() for path in paths}
    assert [row["uniqueid"] for row in listed["/record"]] == ["rec.1", "rec.2"]
    assert [(row["uniqueid"], row["src"]) for row in listed["/transcription"]] == [("rec.1", "999")]
