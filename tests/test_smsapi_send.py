"""/sendSMS through SMSAPI: the outbox, billing, errors, retries, test mode.

A real cloudpbx server and a fake SMSAPI (tests/fakes/smsapi.py), both on loopback, over
real HTTP; statuses are read back from the WebSocket history (and, once, the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from cloudpbx.adapters.smsapi import SmsapiGateway
from cloudpbx.domain.records import CdrRecord, SmsMessage
from cloudpbx.domain.states import Disposition, SmsStatus
from cloudpbx.runtime import Runtime
from cloudpbx.storage.sms import Outbox
from tests.conftest import Tenants
from tests.fakes.smsapi import FakeSmsapi, Step
from tests.live import LiveServer, make_settings, start_server

ACCOUNT = "smsapi-test"
SENDER = "CloudPBX"


@dataclass
class Rig:
    server: LiveServer
    fake: FakeSmsapi
    tenants: Tenants

    @property
    def runtime(self) -> Runtime:
        return self.server.runtime


_serial = itertools.count(1)


async def new_tenants(runtime: Runtime, tenants: Tenants | None = None) -> Tenants:
    """Two PBXes on the SMSAPI account, a key each (fresh names on a shared server)."""
    if tenants is None:
        serial = next(_serial)
        tenants = Tenants(a_name=f"SmsA{serial}", b_name=f"SmsB{serial}")
    for name in (tenants.a_name, tenants.b_name):
        await runtime.tenants.create(name, "Europe/Warsaw", sms_gateway=ACCOUNT)
    tenants.a_key = await runtime.tenants.create_key(tenants.a_name, "tests")
    tenants.b_key = await runtime.tenants.create_key(tenants.b_name, "tests")
    return tenants


def rig_settings(
    folder: Path,
    fake: FakeSmsapi,
    *,
    callbacks: bool = True,
    poll: bool | None = True,
    token: str | None = None,
    **overrides: Any,
) -> Any:
    """Settings for a server on the fake; `poll=None` leaves the account's default."""
    token_file = folder / "smsapi.token"
    token_file.write_text((token or fake.token) + "\n")
    account: dict[str, Any] = {
        "api_url": fake.url,
        "token_file": str(token_file),
        "sender": SENDER,
        "callbacks": callbacks,
    }
    if poll is not None:
        account["poll"] = poll
    values: dict[str, Any] = {
        "sms_gateway": "none",
        "smsapi": {ACCOUNT: account},
        "sms_submit_timeout": 0.5,
        "sms_retry_base": 0.05,
        "sms_retry_max": 0.2,
        "sms_poll_interval": 0.1,
        "sms_dispatch_interval": 0.02,
    }
    values.update(overrides)
    return make_settings(folder, **values)


async def start_rig_server(settings: Any, tenants: Tenants, *, fresh: bool = True) -> LiveServer:
    async def prepare(runtime: Runtime) -> None:
        if fresh:
            await new_tenants(runtime, tenants)

    server = await start_server(settings, prepare=prepare)
    if server.runtime.sms_callbacks is not None:
        # The public URL is known once the port is: SMSAPI would reach us here.
        server.runtime.sms_callbacks.base_url = server.url
    return server


@contextlib.asynccontextmanager
async def rig(folder: Path, **options: Any) -> AsyncIterator[Rig]:
    fake = FakeSmsapi()
    await fake.start()
    tenants = Tenants(a_name="MojaCentrala", b_name="InnaCentrala")
    server = await start_rig_server(rig_settings(folder, fake, **options), tenants)
    try:
        yield Rig(server, fake, tenants)
    finally:
        await server.stop()
        await fake.stop()


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async with rig(tmp_path_factory.mktemp("smsapi")) as opened:
        yield opened


async def with_new_pbxes(shared: Rig) -> Rig:
    """A shared server and fake with a new pair of PBXes, the fake's memory cleared."""
    shared.fake.script.clear()
    shared.fake.requests.clear()
    shared.fake.messages.clear()
    return Rig(shared.server, shared.fake, await new_tenants(shared.runtime))


@pytest.fixture
async def fresh(shared: Rig) -> Rig:
    return await with_new_pbxes(shared)


# -- helpers ---------------------------------------------------------------------------------


async def send_sms(server: LiveServer, key: str, **form: str) -> httpx.Response:
    async with server.client(key) as client:
        return await client.post("/sendSMS", data=form)


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def sms_events(server: LiveServer, pbx: str) -> list[dict[str, Any]]:
    """The PBX's smsSendResponse events so far, oldest first (WebSocket history, once the
    group commit has stored what was published)."""
    tenant = await server.runtime.tenants.require(pbx)
    await server.runtime.hub.flush()
    replay = await server.runtime.hub.replay_after(tenant, 0)
    found = []
    for message in replay.messages:
        text = orjson.loads(message.data)["text"]
        if "smsSendResponse" in text:
            found.append(text["smsSendResponse"])
    return found


async def statuses(server: LiveServer, pbx: str, response_id: str) -> list[str]:
    return [e["status"] for e in await sms_events(server, pbx) if e["MsgId"] == response_id]


async def expect_statuses(
    server: LiveServer, pbx: str, response_id: str, expected: list[str], seconds: float = 3.0
) -> None:
    """Wait for exactly these smsSendResponse statuses of a message. (A status can reach
    the server by callback and by poll at once; the one that applies it publishes it a
    moment after the other has already answered.)"""
    deadline = asyncio.get_running_loop().time() + seconds
    while (found := await statuses(server, pbx, response_id)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"statuses {found}, expected {expected}")
        await asyncio.sleep(0.02)


async def stored(server: LiveServer, pbx: str, response_id: str) -> SmsMessage:
    tenant = await server.runtime.tenants.require(pbx)
    message = await server.runtime.sms_store.get(tenant, response_id)
    assert message is not None
    return message


async def outbox(server: LiveServer, pbx: str, response_id: str) -> Any:
    tenant = await server.runtime.tenants.require(pbx)
    return await server.runtime.sms_store.item(tenant, response_id)


async def cdr_row(server: LiveServer, key: str, response_id: str) -> dict[str, Any]:
    async with server.client(key) as client:
        rows = (await client.get("/cdr")).json()
    (row,) = [r for r in rows if r["uniqueid"] == response_id]
    result: dict[str, Any] = row
    return result


def grosze(points: float) -> str:
    return str(math.ceil(round(points * 100, 6)))


# -- success -----------------------------------------------------------------------------------


async def test_send_goes_through_smsapi_and_reports_reach_the_websocket(fresh: Rig) -> None:
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    body = "Zażółć gęślą jaźń — spotkanie jutro o 10:00 w sali 2, proszę potwierdzić."
    url = f"{server.ws_url}/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
    async with connect(url, proxy=None, open_timeout=3) as ws:
        response = await send_sms(server, tenants.a_key, to="600 100 200", body=body)
        assert response.status_code == 200
        answer = response.json()
        assert answer["responseStatus"] == "QUEUE" and answer["responseErrorMessage"] is None
        response_id = answer["responseId"]

        (request,) = fake.sends()
        assert request["authorization"] == f"Bearer {fake.token}"
        assert request["to"] == "48600100200" and request["message"] == body
        assert request["from"] == SENDER and request["format"] == "json"
        assert request["idx"] == response_id and request["check_idx"] == "1"
        assert "test" not in request
        token = server.runtime.sms_callbacks.token(tenants.a_name)  # type: ignore[union-attr]
        assert request["notify_url"] == (f"{server.url}/callbacks/smsapi/{tenants.a_name}/{token}")
        sms = fake.by_idx(response_id)
        item = await outbox(server, tenants.a_name, response_id)
        assert item.gateway_id == sms.id and item.outbox is Outbox.ACCEPTED

        # Billing: the gateway's points (2 UCS-2 parts here) at 100 grosze per point.
        assert sms.parts == 2 and (await stored(server, tenants.a_name, response_id)).parts == 2
        row = await cdr_row(server, tenants.a_key, response_id)
        assert row["cost"] == grosze(sms.points) == "33"
        assert (row["dst"], row["lastapp"], row["src"], row["zone"]) == (
            "48600100200",
            "SMS",
            "SMS",
            "SMS",
        )

        for status in ("ACCEPTED", "SENT", "DELIVERED"):
            callback = await fake.report((sms.id, status))
            assert (callback.status_code, callback.text) == (200, "OK")
        seen = []
        while len(seen) < 3:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
            seen.append(message["text"]["smsSendResponse"])
    assert seen == [
        {"MsgId": response_id, "to": "48600100200", "status": s}
        for s in ("ACCEPTED", "SENT", "DELIVERED")
    ]
    tenant = await server.runtime.tenants.require(tenants.a_name)
    # (A poll may see a status before its callback arrives: both are in the history.)
    history = await server.runtime.sms_store.history(tenant, response_id)
    assert list(dict.fromkeys(history)) == [
        SmsStatus.QUEUE,
        SmsStatus.ACCEPTED,
        SmsStatus.SENT,
        SmsStatus.DELIVERED,
    ]


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("ż" * 70, 1),
        ("Dzień dobry" + "." * 60, 2),  # 71 characters with a diacritic: UCS-2
        ("ą" * 134, 2),
        ("ą" * 135, 3),
    ],
)
async def test_parts_gsm7_and_ucs2_show_in_the_cost(fresh: Rig, body: str, parts: int) -> None:
    response = await send_sms(fresh.server, fresh.tenants.a_key, to="600100200", body=body)
    response_id = response.json()["responseId"]
    sms = fresh.fake.by_idx(response_id)
    assert sms.parts == parts
    assert (await stored(fresh.server, fresh.tenants.a_name, response_id)).parts == parts
    row = await cdr_row(fresh.server, fresh.tenants.a_key, response_id)
    assert row["cost"] == grosze(parts * fresh.fake.point_price)


async def test_test_mode_delivers_nothing_charges_nothing_and_still_reports(fresh: Rig) -> None:
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    response = await send_sms(server, tenants.a_key, to="600100200", body="próba", test="true")
    assert response.status_code == 200 and response.json()["responseStatus"] == "QUEUE"
    response_id = response.json()["responseId"]
    (request,) = fake.sends()
    assert request["test"] == "1" and request["idx"] == response_id
    assert fake.delivered_to_phones() == []
    assert (await cdr_row(server, tenants.a_key, response_id))["cost"] == "0"
    await fake.report((fake.by_idx(response_id).id, "DELIVERED"))
    await expect_statuses(server, tenants.a_name, response_id, ["DELIVERED"])


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [11, 13, 14, 57])
async def test_gateway_refusal_is_a_500_with_the_reason(fresh: Rig, code: int) -> None:
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    fake.script.append(Step("error", code))
    response = await send_sms(server, tenants.a_key, to="600100200", body="x")
    assert response.status_code == 500
    answer = response.json()
    assert list(answer) == ["responseId", "responseStatus", "responseErrorMessage"]
    assert answer["responseStatus"] == "FAILED"
    assert answer["responseErrorMessage"].startswith(f"SMSAPI error {code}: ")
    response_id = answer["responseId"]
    assert (await cdr_row(server, tenants.a_key, response_id))["cost"] == "0"
    assert (await stored(server, tenants.a_name, response_id)).status is SmsStatus.FAILED
    await expect_statuses(server, tenants.a_name, response_id, ["FAILED"])
    await asyncio.sleep(0.2)  # several dispatcher rounds: a refusal is never retried
    assert [s["idx"] for s in fake.sends()] == [response_id] and fake.messages == {}
    item = await outbox(server, tenants.a_name, response_id)
    assert item.outbox is Outbox.REFUSED and item.attempts == 1


async def test_wrong_token_holds_the_account_and_is_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong token (HTTP 401, error 101) is the account's problem, not the message's:
    the message waits (QUEUE), nothing is failed, and the token appears nowhere."""
    caplog.set_level(logging.DEBUG)
    async with rig(tmp_path, token="not-the-right-token-12345") as opened:
        server, tenants = opened.server, opened.tenants
        response = await send_sms(server, tenants.a_key, to="600100200", body="x")
        assert response.status_code == 200
        assert response.json()["responseStatus"] == "QUEUE"
        response_id = response.json()["responseId"]
        item = await outbox(server, tenants.a_name, response_id)
        assert item.outbox is Outbox.PENDING and item.status is SmsStatus.QUEUE
        (entry,) = server.runtime.sms.health()
        assert entry["status"] == "held" and entry["error"].startswith("SMSAPI error 101")
        gateway = server.runtime.sms_gateways[ACCOUNT]
        assert isinstance(gateway, SmsapiGateway)
        shown = f"{gateway!r} {server.runtime.settings!r} {server.runtime.sms_callbacks!r}"
        assert "not-the-right-token" not in shown
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "not-the-right-token" not in logged and opened.fake.token not in logged
    assert f"SMS gateway {ACCOUNT} refused a message for the account's sake" in logged


# -- transient failures, timeouts, crashes -----------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        Step("error", 8),
        Step("error", 201),
        Step("error", 202),
        Step("error", 203),
        Step("error", 999),
        Step("http", 503),
        Step("http", 429),
    ],
    ids=lambda step: f"{step.kind}-{step.code}",
)
async def test_transient_failure_answers_queue_and_is_retried(fresh: Rig, step: Step) -> None:
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    fake.script.extend([step, step])
    response = await send_sms(server, tenants.a_key, to="600100200", body="ponów")
    assert response.status_code == 200
    assert response.json()["responseStatus"] == "QUEUE"
    assert response.json()["responseErrorMessage"] is None
    response_id = response.json()["responseId"]

    async def accepted() -> bool:
        item = await outbox(server, tenants.a_name, response_id)
        return bool(item.outbox is Outbox.ACCEPTED)

    await eventually(accepted)
    sends = fake.sends()
    assert len(sends) == 3 and {s["idx"] for s in sends} == {response_id}
    assert len([m for m in fake.messages.values() if m.idx == response_id]) == 1
    item = await outbox(server, tenants.a_name, response_id)
    assert item.attempts == 3 and item.gateway_id == fake.by_idx(response_id).id
    row = await cdr_row(server, tenants.a_key, response_id)
    assert row["cost"] == grosze(fake.by_idx(response_id).points)


async def test_timeout_then_retry_with_the_same_idx_never_sends_twice(fresh: Rig) -> None:
    """The gateway takes the message but its answer comes after our timeout: the retry
    (same idx, check_idx=1) gets error 53, and the delivery report, naming our idx,
    tells us the gateway's id."""
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    fake.script.append(Step("slow", delay=1.5))
    started = asyncio.get_running_loop().time()
    response = await send_sms(server, tenants.a_key, to="600100200", body="tylko raz")
    assert asyncio.get_running_loop().time() - started < 1.4  # the request did not wait
    assert response.status_code == 200 and response.json()["responseStatus"] == "QUEUE"
    response_id = response.json()["responseId"]

    async def resubmitted() -> bool:
        return len(fake.sends()) >= 2

    await eventually(resubmitted)
    await eventually(lambda: _outbox_is(server, tenants.a_name, response_id, Outbox.ACCEPTED))
    assert [s["idx"] for s in fake.sends()] == [response_id, response_id]
    assert all(s["check_idx"] == "1" for s in fake.sends())
    (sms,) = fake.messages.values()  # sent once
    item = await outbox(server, tenants.a_name, response_id)
    assert item.gateway_id is None and item.attempts == 2  # error 53: id not known yet

    assert (await fake.report((sms.id, "DELIVERED"))).text == "OK"
    await expect_statuses(server, tenants.a_name, response_id, ["DELIVERED"])
    item = await outbox(server, tenants.a_name, response_id)
    assert item.gateway_id == sms.id and item.status is SmsStatus.DELIVERED
    await asyncio.sleep(0.2)
    assert len(fake.sends()) == 2


async def _outbox_is(server: LiveServer, pbx: str, response_id: str, state: Outbox) -> bool:
    item = await outbox(server, pbx, response_id)
    return item is not None and item.outbox is state


async def test_gateway_down_then_back(fresh: Rig) -> None:
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    await fake.stop()
    try:
        response = await send_sms(server, tenants.a_key, to="600100200", body="później")
        assert response.status_code == 200 and response.json()["responseStatus"] == "QUEUE"
        response_id = response.json()["responseId"]
        item = await outbox(server, tenants.a_name, response_id)
        assert item.outbox is Outbox.PENDING and item.attempts >= 1
    finally:
        await fake.start()
    await eventually(lambda: _outbox_is(server, tenants.a_name, response_id, Outbox.ACCEPTED))
    assert [s["idx"] for s in fake.sends()] == [response_id]
    assert fake.by_idx(response_id).to == "48600100200"


async def test_a_message_stored_but_never_submitted_is_sent_after_a_crash(fresh: Rig) -> None:
    """A request that stored its message and died before calling the gateway: the row is
    due when the request's lease runs out, and the dispatcher sends it."""
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    tenant = await server.runtime.tenants.require(tenants.a_name)
    now = datetime.now(UTC)
    response_id = "4000000000000000001"
    await server.runtime.sms_store.add(
        tenant,
        SmsMessage(response_id, "48600100300", "po awarii", False, SmsStatus.QUEUE, 1, 16, now),
        cdr_record=CdrRecord(
            now,
            '"x" <SMS>',
            "SMS",
            "48600100300",
            "",
            "",
            "SMS",
            0,
            0,
            Disposition.ANSWERED,
            response_id,
            16,
            "SMS",
        ),
        gateway=ACCOUNT,
        outbox=Outbox.PENDING,
        due_at=now - timedelta(seconds=1),
    )
    await eventually(lambda: _outbox_is(server, tenants.a_name, response_id, Outbox.ACCEPTED))
    sms = fake.by_idx(response_id)
    assert (sms.to, sms.message) == ("48600100300", "po awarii")
    assert (await cdr_row(server, tenants.a_key, response_id))["cost"] == grosze(sms.points)


async def test_never_taken_before_the_deadline_fails(tmp_path: Path) -> None:
    async with rig(tmp_path, sms_retry_deadline=0.4) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        fake.script.extend([Step("error", 202)] * 100)
        response = await send_sms(server, tenants.a_key, to="600100200", body="za późno")
        assert response.status_code == 200 and response.json()["responseStatus"] == "QUEUE"
        response_id = response.json()["responseId"]

        async def failed() -> bool:
            return await statuses(server, tenants.a_name, response_id) == ["FAILED"]

        await eventually(failed)
        assert (await cdr_row(server, tenants.a_key, response_id))["cost"] == "0"
        assert fake.messages == {}


async def test_maybe_sent_past_the_deadline_waits_for_reports_then_unknown(
    tmp_path: Path,
) -> None:
    """Every submission may have reached the gateway (HTTP 502): it is not called FAILED
    (it may be on a phone), resubmission stops at the deadline, and without a report it
    becomes UNKNOWN after sms_report_max_age."""
    async with rig(tmp_path, sms_retry_deadline=0.3, sms_report_max_age=0.8) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        fake.script.extend([Step("http", 502)] * 100)
        response = await send_sms(server, tenants.a_key, to="600100200", body="może")
        assert response.status_code == 200
        response_id = response.json()["responseId"]
        await eventually(lambda: _outbox_is(server, tenants.a_name, response_id, Outbox.UNSURE))

        async def unknown() -> bool:
            return await statuses(server, tenants.a_name, response_id) == ["UNKNOWN"]

        await eventually(unknown)
        sent = len(fake.sends())
        await asyncio.sleep(0.2)
        assert len(fake.sends()) == sent  # no more submissions
        assert (await cdr_row(server, tenants.a_key, response_id))["cost"] != "0"


async def test_refused_on_resubmission_after_a_lost_answer_waits_for_reports(
    fresh: Rig,
) -> None:
    """The first answer was lost (the message went out); the resubmission is refused for
    another reason (the number is blacklisted now): FAILED could be a lie, so the message
    waits, and the delivery report settles it."""
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    fake.script.extend([Step("slow", delay=1.5), Step("error", 57)])
    response = await send_sms(server, tenants.a_key, to="600100200", body="kredyt")
    assert response.status_code == 200 and response.json()["responseStatus"] == "QUEUE"
    response_id = response.json()["responseId"]

    async def refused_once() -> bool:
        return len(fake.sends()) >= 2

    await eventually(refused_once)
    await asyncio.sleep(0.2)
    item = await outbox(server, tenants.a_name, response_id)
    assert item.outbox is Outbox.UNSURE and item.status is SmsStatus.QUEUE
    assert len(fake.sends()) == 2  # not resubmitted again
    assert await statuses(server, tenants.a_name, response_id) == []
    await fake.report((fake.by_idx(response_id).id, "DELIVERED"))
    await expect_statuses(server, tenants.a_name, response_id, ["DELIVERED"])
