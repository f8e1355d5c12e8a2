"""The SDK against the real server: every REST call, sync and async, and its errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from cloudpbx.client import (
    NO_RETRY,
    ActionError,
    APIError,
    AsyncClient,
    AuthError,
    BadRequest,
    CdrRow,
    Client,
    Forbidden,
    NotFound,
    Page,
    Recording,
    ServerError,
    SmsError,
    SmsStatus,
    TransportError,
    TruncatedError,
)
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running
from tests.test_client_helpers import (
    FAST,
    CountingTransport,
    DialBackend,
    FailingSmsGateway,
    add_cdrs,
    add_recording,
    add_transcription,
    at,
    cdr_record,
)

Live = tuple[LiveServer, Tenants]


class Api:
    """Calls one SDK method with the sync Client (in a thread) or the AsyncClient."""

    def __init__(self, server: LiveServer, key: str, mode: str, **options: Any) -> None:
        self.server, self.key, self.mode, self.options = server, key, mode, options

    async def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        options = {"retry": FAST, **self.options}
        if self.mode == "async":
            async with AsyncClient(self.server.url, self.key, **options) as client:
                result = getattr(client, name)(*args, **kwargs)
                if name.startswith("iter_"):
                    return [row async for row in result]
                return await result

        def run() -> Any:
            with Client(self.server.url, self.key, **options) as client:
                result = getattr(client, name)(*args, **kwargs)
                return list(result) if name.startswith("iter_") else result

        return await asyncio.to_thread(run)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_cdr_typed_rows_and_raw(live: Live, mode: str) -> None:
    server, tenants = live
    await add_cdrs(
        server,
        tenants.a_name,
        [
            cdr_record("1772539200.1", at("2026-03-03", "10:00:00")),
            cdr_record("1772539200.2", at("2026-03-04"), cost=None, zone=""),
        ],
    )
    api = Api(server, tenants.a_key, mode)
    rows = await api("cdr", date(2026, 3, 3), "2026-03-04")
    assert isinstance(rows, Page) and rows.total == 2 and not rows.truncated
    first, second = rows
    assert isinstance(first, CdrRow)
    assert first.calldate == datetime(2026, 3, 3, 11, 0, 0)  # Warsaw local time
    assert (first.src, first.dst, first.duration, first.billsec) == ("101", "600100200", 30, 25)
    assert first.cost == 12 and first.raw["cost"] == "12"
    assert second.cost is None and second.raw["cost"] == "" and second.zone == ""
    assert first.extra == {}
    # datetimes count as their day; a day outside the range gives nothing
    only = await api("cdr", datetime(2026, 3, 4, 8, 0), datetime(2026, 3, 4, 23, 0))
    assert [r.uniqueid for r in only] == ["1772539200.2"]
    assert await api("cdr", "2026-03-05", "2026-03-06") == []


async def test_recordings_transcriptions(live: Live, mode: str) -> None:
    server, tenants = live
    await add_recording(server, tenants.a_name, "1772539200.5", b"RIFF....", at("2026-03-05"))
    await add_transcription(
        server, tenants.a_name, "1772539200.5", at("2026-03-05"), "Dzień dobry", "Powitanie"
    )
    api = Api(server, tenants.a_key, mode)
    (recording,) = await api("recordings", "2026-03-05", "2026-03-05")
    assert isinstance(recording, Recording)
    assert (recording.uniqueid, recording.format, recording.filename) == (
        "1772539200.5",
        "wav",
        "1772539200.5.wav",
    )
    assert recording.date == datetime(2026, 3, 5, 13, 0, 0)
    (item,) = await api("transcriptions", "2026-03-05", "2026-03-05")
    assert (item.uniqueid, item.src, item.dst) == ("1772539200.5", "101", "102")
    found = await api("transcription", "1772539200.5")
    assert (found.content, found.summary) == ("Dzień dobry", "Powitanie")
    assert [r.uniqueid for r in await api("iter_recordings", "2026-03-01", "2026-03-31")] == [
        "1772539200.5"
    ]
    assert len(await api("iter_transcriptions", "2026-03-01", "2026-03-31")) == 1


async def test_dial(live: Live, mode: str) -> None:
    server, tenants = live
    backend = DialBackend(tenants.a_name)
    server.runtime.backends.append(backend)
    api = Api(server, tenants.a_key, mode)
    result = await api("dial", "101", "600100200")
    assert result.originate_id == "orig-1"
    with pytest.raises(ActionError) as refused:
        await api("dial", "101", "666")
    assert refused.value.status == 500 and refused.value.originate_id == "orig-2"
    with pytest.raises(ActionError):
        await api("dial", "999", "600100200")  # not an extension: the PBX refuses
    with pytest.raises(BadRequest) as bad:
        await api("dial", "101", "")
    assert bad.value.code == "missing_parameter" and "cpb" in bad.value.message
    assert backend.calls == [("101", "600100200"), ("101", "666")]


async def test_send_sms_and_errors(live: Live, mode: str) -> None:
    server, tenants = live
    api = Api(server, tenants.a_key, mode)
    answer = await api("send_sms", "+48600100200", "Spotkanie o 10", test=True)
    assert answer.response_status == "QUEUE" and answer.status is SmsStatus.QUEUE
    assert answer.response_error_message is None and answer.response_id.isdigit()
    rows = await api("cdr")
    assert [row.uniqueid for row in rows] == [answer.response_id]
    with pytest.raises(BadRequest) as missing:
        await api("send_sms", "12", "x")
    assert missing.value.message == "Parameter is missing" and missing.value.status == 400
    with pytest.raises(Forbidden) as no_gateway:
        await Api(server, tenants.b_key, mode)("send_sms", "600100200", "x")
    assert no_gateway.value.code == "sms_not_enabled"
    server.runtime.sms_gateways["simulator"] = FailingSmsGateway()
    with pytest.raises(SmsError) as failed:
        await api("send_sms", "600100200", "x")
    assert failed.value.status == 500 and failed.value.message == "operator unreachable"
    assert failed.value.response.response_status == "FAILED"


@pytest.mark.parametrize(
    ("status", "cls", "call"),
    [
        (400, BadRequest, ("cdr", "2026-03-05", "2026-03-01")),
        (401, AuthError, ("cdr",)),
        (403, Forbidden, ("send_sms", "600100200", "x")),
        (404, NotFound, ("transcription", "1772539200.404")),
        (400, BadRequest, ("transcription", "bad:id")),
    ],
)
async def test_error_mapping(
    live: Live, status: int, cls: type[APIError], call: tuple[str, ...]
) -> None:
    server, tenants = live
    key = {401: tenants.revoked_key, 403: tenants.b_key}.get(status, tenants.a_key)
    with pytest.raises(cls) as caught:
        await Api(server, key, "async")(*call)
    error = caught.value
    assert error.status == status and error.message and error.request is not None
    assert error.request.method == "GET" or call[0] == "send_sms"
    assert server.url in error.request.url and str(status) in str(error)


async def test_wrong_key_is_401_without_retry(live: Live) -> None:
    server, _ = live
    transport = CountingTransport()

    def run() -> None:
        with Client(server.url, "nope", transport=transport, retry=FAST) as client:
            client.cdr()

    with pytest.raises(AuthError) as caught:
        await asyncio.to_thread(run)
    assert caught.value.code == "invalid_key" and len(transport.requests) == 1


async def test_retries_idempotent_calls_only(live: Live) -> None:
    server, tenants = live
    server.runtime.backends.append(DialBackend(tenants.a_name))

    def call(fail: int, action: Callable[[Client], Any]) -> tuple[Any, int]:
        transport = CountingTransport(fail=fail)
        with Client(server.url, tenants.a_key, transport=transport, retry=FAST) as client:
            try:
                return action(client), len(transport.requests)
            except TransportError as exc:
                return exc, len(transport.requests)

    rows, tries = await asyncio.to_thread(call, 2, lambda c: c.cdr())
    assert rows == [] and tries == 3  # two refused connections, then the answer
    error, tries = await asyncio.to_thread(call, 3, lambda c: c.cdr())
    assert isinstance(error, TransportError) and tries == 3
    assert error.request is not None and error.request.url.endswith("/cdr")
    error, tries = await asyncio.to_thread(call, 1, lambda c: c.dial("101", "200"))
    assert isinstance(error, TransportError) and tries == 1  # dial: never retried
    error, tries = await asyncio.to_thread(call, 1, lambda c: c.send_sms("600100200", "x"))
    assert isinstance(error, TransportError) and tries == 1  # sendSMS: never retried


async def test_server_error_is_retried_then_raised(live: Live) -> None:
    server, tenants = live
    async with server.runtime.engine.begin() as conn:
        await conn.execute(sqlalchemy.text("DROP TABLE transcription"))
    transport = CountingTransport()

    def run() -> None:
        with Client(server.url, tenants.a_key, transport=transport, retry=FAST) as client:
            client.transcriptions()

    with pytest.raises(ServerError) as caught:
        await asyncio.to_thread(run)
    assert caught.value.status == 500 and caught.value.code == "internal"
    assert len(transport.requests) == 3


async def test_unreachable_server(tmp_path: Path) -> None:
    async with AsyncClient("http://127.0.0.1:9", "key", retry=NO_RETRY) as client:
        with pytest.raises(TransportError) as caught:
            await client.cdr()
    assert "ConnectError" in caught.value.message


async def test_iter_cdr_splits_over_the_cap(tmp_path: Path, mode: str) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, cdr_cap=5)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        records = [
            cdr_record(f"17725{day:02d}000.{n}", at(f"2026-03-{day:02d}", f"1{n}:00:00"))
            for day in range(1, 32)
            for n in range(day % 4)  # 0-3 calls a day, 46 in March
        ]
        records.append(cdr_record("1772000000.99", at("2026-02-28")))  # outside the range
        await add_cdrs(server, tenants.a_name, records)
        api = Api(server, tenants.a_key, mode)
        capped = await api("cdr", "2026-03-01", "2026-03-31")
        assert len(capped) == 5 and capped.truncated and capped.total == len(records) - 1
        rows = await api("iter_cdr", "2026-03-01", "2026-03-31")
        assert [r.uniqueid for r in rows] == [r.uniqueid for r in records[:-1]]
        # a single day over the cap cannot be split: an error, after the days before it
        busy = [cdr_record(f"1775000000.{n}", at("2026-04-02", f"0{n}:00:00")) for n in range(7)]
        await add_cdrs(server, tenants.a_name, [cdr_record("1775.0", at("2026-04-01")), *busy])
        seen: list[str] = []

        def collect() -> None:
            with Client(server.url, tenants.a_key) as client:
                for row in client.iter_cdr("2026-04-01", "2026-04-03"):
                    seen.append(row.uniqueid)

        with pytest.raises(TruncatedError) as caught:
            await asyncio.to_thread(collect)
        assert seen == ["1775.0"] and caught.value.total == 7 and caught.value.received == 5
        async with AsyncClient(server.url, tenants.a_key) as client:
            lenient = [r async for r in client.iter_cdr("2026-04-01", "2026-04-03", strict=False)]
        assert len(lenient) == 6
