"""Tenant isolation over real HTTP: no endpoint ever returns data of another PBX.

Two PBXes with calls, recordings and transcriptions of their own, plus one uniqueid that
both happen to use (ids are unique per PBX only). Each key must see exactly its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from cloudpbx.domain.records import RecordingInfo
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
    wav_bytes,
)

SHARED_ID = "1782000000.1"  # a call id both PBXes happen to have
LISTS = ("/cdr", "/record", "/transcription")


@dataclass
class Side:
    """One PBX's key, what it owns, and markers that must never reach the other side."""

    name: str
    key: str
    prefix: str  # its calls' src and uniqueid prefix
    cdrs: list[str]
    calls: list[str]  # recorded and transcribed
    secret: str  # in its clid, src and transcriptions
    audio: dict[str, bytes]


@dataclass
class World:
    server: LiveServer
    tenants: Tenants
    a: Side
    b: Side


async def _seed(server: LiveServer, name: str, key: str, prefix: str, secret: str) -> Side:
    today = today_warsaw()
    own = [f"{prefix}.{n}" for n in (1, 2)]
    await add_cdrs(
        server,
        name,
        *(
            cdr(uid, local(today, 0, 0, 1 + n), clid=f'"{secret}" <{prefix}>', src=prefix)
            for n, uid in enumerate([*own, SHARED_ID])
        ),
        cdr(f"{prefix}.old", local(today - timedelta(days=400)), src=prefix),
    )
    audio = {}
    for n, uid in enumerate([*own, SHARED_ID]):
        tone = (prefix.encode() * 2)[:2]
        audio[uid] = await add_recording(
            server, name, uid, local(today, 0, 0, 1 + n), data=wav_bytes(500 + n, tone), src=prefix
        )
        await add_transcription(
            server, name, uid, local(today, 0, 0, 1 + n), f"{secret}: rozmowa {uid}", secret
        )
    response = await _send_sms(server, key)
    sms_ids = [response.json()["responseId"]] if response.status_code == 200 else []
    cdrs = [*own, SHARED_ID, *sms_ids]
    return Side(name, key, prefix, cdrs, [*own, SHARED_ID], secret, audio)


async def _send_sms(server: LiveServer, key: str) -> httpx.Response:
    async with http(server, key) as client:
        return await client.post("/sendSMS", data={"to": "600100200", "body": "hej"})


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with module_server(tmp_path_factory.mktemp("isolation")) as server:
        tenants = await new_pbxes(server)
        a = await _seed(server, tenants.a_name, tenants.a_key, "3101", "Tajemnica-A")
        b = await _seed(server, tenants.b_name, tenants.b_key, "4101", "Tajemnica-B")
        assert len(a.cdrs) == 4 and len(b.cdrs) == 3  # A sent an SMS; B has no gateway
        yield World(server, tenants, a, b)


def sides(world: World) -> list[tuple[Side, Side]]:
    return [(world.a, world.b), (world.b, world.a)]


def assert_nothing_of(other: Side, response: httpx.Response, asked: str = "") -> None:
    """No marker of `other` in the body (but the id the client `asked` for, echoed in a 404)."""
    text = response.content
    assert other.secret.encode() not in text
    assert other.name.encode() not in text
    for uid in other.cdrs:
        if uid not in (SHARED_ID, asked):
            assert uid.encode() not in text
    for audio in other.audio.values():
        assert audio[44:] not in text  # the samples, past the WAV header


async def test_lists_show_only_the_keys_own_rows(world: World) -> None:
    for me, other in sides(world):
        for params in ({}, ALL_TIME):
            cdrs = await get(world.server, me.key, "/cdr", **params)
            expected = me.cdrs if not params else [f"{me.prefix}.old", *me.cdrs]
            assert uniqueids(cdrs) == expected
            assert cdrs.headers["x-total-count"] == str(len(expected))
            assert {row["src"] for row in cdrs.json()} <= {me.prefix, "SMS"}
            assert_nothing_of(other, cdrs)
            for path in ("/record", "/transcription"):
                response = await get(world.server, me.key, path, **params)
                assert uniqueids(response) == me.calls
                assert_nothing_of(other, response)


async def test_details_of_the_other_pbx_are_404(world: World) -> None:
    for me, other in sides(world):
        for uid in other.calls:
            if uid == SHARED_ID:
                continue
            record = await get(world.server, me.key, f"/record/{uid}")
            assert_json_error(record, 404, "unknown_recording")
            assert_nothing_of(other, record, asked=uid)
            text = await get(world.server, me.key, f"/transcription/{uid}")
            assert_json_error(text, 404, "unknown_transcription")
            assert_nothing_of(other, text, asked=uid)


async def test_a_shared_uniqueid_gives_each_pbx_its_own(world: World) -> None:
    for me, other in sides(world):
        record = await get(world.server, me.key, f"/record/{SHARED_ID}")
        assert record.status_code == 200
        assert record.content == me.audio[SHARED_ID] != other.audio[SHARED_ID]
        text = await get(world.server, me.key, f"/transcription/{SHARED_ID}")
        assert text.json() == {
            "uniqueid": SHARED_ID,
            "content": f"{me.secret}: rozmowa {SHARED_ID}",
            "summary": me.secret,
        }


async def test_own_details_are_served(world: World) -> None:
    for me, other in sides(world):
        for uid in me.calls:
            record = await get(world.server, me.key, f"/record/{uid}")
            assert record.content == me.audio[uid]
            ranged = await _ranged(world.server, me.key, uid)
            assert ranged.content == me.audio[uid][:10]
            assert_nothing_of(other, ranged)


async def _ranged(server: LiveServer, key: str, uid: str) -> httpx.Response:
    async with http(server, key) as client:
        response = await client.get(f"/record/{uid}", headers={"Range": "bytes=0-9"})
    assert response.status_code == 206
    return response


async def test_nothing_in_the_request_chooses_another_pbx(world: World) -> None:
    """Only the key decides the PBX: names in the query or headers are ignored."""
    a, b = world.a, world.b
    async with http(world.server, a.key) as client:
        for path in LISTS:
            response = await client.get(
                path,
                params={"pbx": b.name, "pbx_name": b.name, "pbxkey": b.key, "tenant": b.name},
                headers={"X-PBX": b.name, "X-Tenant": b.name, "Host": f"{b.name}.example"},
            )
            assert uniqueids(response) == (a.cdrs if path == "/cdr" else a.calls)
            assert_nothing_of(b, response)


async def test_a_stored_path_into_the_other_pbxs_folder_is_refused(world: World) -> None:
    """Even a recording row of B that names a file in A's folder serves nothing of A."""
    pair = await new_pbxes(world.server)
    victim = await add_recording(
        world.server, pair.a_name, "5101.1", local(today_warsaw()), data=wav_bytes(300, b"56")
    )
    stolen = f"../{pair.a_name}/5101.1.wav"
    tenant_b = await world.server.runtime.tenants.require(pair.b_name)
    info = RecordingInfo("6101.1", local(today_warsaw()), "6101", "1", "wav", stolen, 10)
    assert await world.server.runtime.calls.add_recording(tenant_b, info)
    response = await get(world.server, pair.b_key, "/record/6101.1")
    assert_json_error(response, 404, "unknown_recording")
    assert victim[44:] not in response.content
    owner = await get(world.server, pair.a_key, "/record/5101.1")
    assert owner.content == victim  # the file is there; B just cannot reach it


async def test_sms_is_only_for_the_pbx_with_a_gateway(world: World) -> None:
    response = await _send_sms(world.server, world.b.key)
    body = assert_json_error(response, 403, "sms_not_enabled")
    assert world.a.name not in body["error"]
