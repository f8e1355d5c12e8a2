"""SMSAPI delivery reports: the callback endpoint and the poller.

Duplicates, out-of-order and batched reports, a server restarted between sending and the
report, reports for another PBX's messages, forged tokens, and status queries where
callbacks cannot reach the server. Real HTTP both ways, on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cloudpbx.domain.states import SmsStatus
from cloudpbx.storage.sms import Outbox
from tests.conftest import Tenants
from tests.fakes.smsapi import FakeSmsapi
from tests.live import LiveServer
from tests.test_smsapi_send import (
    Rig,
    eventually,
    expect_statuses,
    outbox,
    rig,
    rig_settings,
    send_sms,
    sms_events,
    start_rig_server,
    statuses,
    stored,
    with_new_pbxes,
)


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async with rig(tmp_path_factory.mktemp("smsapi-callbacks")) as opened:
        yield opened


@pytest.fixture
async def fresh(shared: Rig) -> Rig:
    return await with_new_pbxes(shared)


async def send_one(rig_: Rig, key: str | None = None, to: str = "600100200") -> tuple[str, str]:
    """Send an SMS from PBX A (or the key's PBX); (responseId, the fake's message id)."""
    response = await send_sms(rig_.server, key or rig_.tenants.a_key, to=to, body="raport")
    assert response.status_code == 200, response.text
    response_id = response.json()["responseId"]
    return response_id, rig_.fake.by_idx(response_id).id


async def history(server: LiveServer, pbx: str, response_id: str) -> list[SmsStatus]:
    tenant = await server.runtime.tenants.require(pbx)
    return await server.runtime.sms_store.history(tenant, response_id)


# The shared rig also polls (every 0.1 s), and the fake's status changes with each report,
# so a poll may see a status before its callback arrives: the assertions count events,
# which are published once whichever way a status comes.


async def test_duplicate_reports_apply_once(fresh: Rig) -> None:
    response_id, message_id = await send_one(fresh)
    for _ in range(3):
        answer = await fresh.fake.report((message_id, "DELIVERED"))
        assert (answer.status_code, answer.text) == (200, "OK")
    await expect_statuses(fresh.server, fresh.tenants.a_name, response_id, ["DELIVERED"])
    assert (await history(fresh.server, fresh.tenants.a_name, response_id)).count(
        SmsStatus.DELIVERED
    ) >= 3


async def test_a_late_sent_never_overwrites_delivered(fresh: Rig) -> None:
    response_id, message_id = await send_one(fresh)
    await fresh.fake.report((message_id, "DELIVERED"))
    await fresh.fake.report((message_id, "SENT"))
    await fresh.fake.report((message_id, "ACCEPTED"))
    await expect_statuses(fresh.server, fresh.tenants.a_name, response_id, ["DELIVERED"])
    message = await stored(fresh.server, fresh.tenants.a_name, response_id)
    assert message.status is SmsStatus.DELIVERED
    recorded = await history(fresh.server, fresh.tenants.a_name, response_id)
    assert SmsStatus.SENT in recorded and SmsStatus.ACCEPTED in recorded  # kept, not applied


async def test_a_batched_report_applies_each_entry(fresh: Rig) -> None:
    sent = [await send_one(fresh, to=to) for to in ("600100201", "600100202", "600100203")]
    answer = await fresh.fake.report(
        (sent[0][1], "DELIVERED"), (sent[1][1], "UNDELIVERED"), (sent[2][1], "SENT")
    )
    assert (answer.status_code, answer.text) == (200, "OK")
    assert "," in answer.request.url.params["MsgId"]  # one request, comma-separated lists
    events = await sms_events(fresh.server, fresh.tenants.a_name)
    assert [(e["MsgId"], e["to"], e["status"]) for e in events] == [
        (sent[0][0], "48600100201", "DELIVERED"),
        (sent[1][0], "48600100202", "UNDELIVERED"),
        (sent[2][0], "48600100203", "SENT"),
    ]


async def test_report_accepts_post_forms_too(fresh: Rig) -> None:
    response_id, message_id = await send_one(fresh)
    item = await outbox(fresh.server, fresh.tenants.a_name, response_id)
    path = fresh.server.runtime.sms_callbacks.path(fresh.tenants.a_name)  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=fresh.server.url, trust_env=False) as client:
        answer = await client.post(
            path, data={"MsgId": message_id, "status": "404", "idx": response_id, "to": item.to}
        )
    assert (answer.status_code, answer.text) == (200, "OK")
    await expect_statuses(fresh.server, fresh.tenants.a_name, response_id, ["DELIVERED"])


async def test_unreadable_entries_are_skipped_and_a_report_needs_an_id(fresh: Rig) -> None:
    response_id, message_id = await send_one(fresh)
    path = fresh.server.runtime.sms_callbacks.path(fresh.tenants.a_name)  # type: ignore[union-attr]
    async with httpx.AsyncClient(base_url=fresh.server.url, trust_env=False) as client:
        odd = await client.get(
            path, params={"MsgId": f"{message_id},{message_id}", "status": "404,999"}
        )
        empty = await client.get(path, params={"status": "404"})
    assert (odd.status_code, odd.text) == (200, "OK")
    await expect_statuses(fresh.server, fresh.tenants.a_name, response_id, ["DELIVERED"])
    assert empty.status_code == 400 and empty.json()["code"] == "invalid_report"


# -- authentication and tenancy -----------------------------------------------------------------


async def test_another_pbxs_message_is_never_touched(fresh: Rig) -> None:
    """PBX A's valid callback URL carrying PBX B's message (by idx and by MsgId)."""
    server, fake, tenants = fresh.server, fresh.fake, fresh.tenants
    b_response_id, b_message_id = await send_one(fresh, key=tenants.b_key)
    a_url = server.runtime.sms_callbacks.url(tenants.a_name)  # type: ignore[union-attr]
    assert a_url is not None
    async with httpx.AsyncClient(trust_env=False) as client:
        for params in (
            {"MsgId": b_message_id, "status": "404", "idx": b_response_id},
            {"MsgId": b_message_id, "status": "404"},
            {"MsgId": "1", "status": "404", "idx": b_response_id},
        ):
            answer = await client.get(a_url, params=params)
            assert (answer.status_code, answer.text) == (200, "OK")
    message = await stored(server, tenants.b_name, b_response_id)
    assert message.status is SmsStatus.QUEUE
    assert await history(server, tenants.b_name, b_response_id) == [SmsStatus.QUEUE]
    assert await sms_events(server, tenants.a_name) == []
    assert await sms_events(server, tenants.b_name) == []
    # Its own URL works.
    await fake.report((b_message_id, "DELIVERED"))
    await expect_statuses(server, tenants.b_name, b_response_id, ["DELIVERED"])


async def test_forged_or_foreign_tokens_are_404(fresh: Rig) -> None:
    server, tenants = fresh.server, fresh.tenants
    response_id, message_id = await send_one(fresh)
    signer = server.runtime.sms_callbacks
    assert signer is not None
    a_token, b_token = signer.token(tenants.a_name), signer.token(tenants.b_name)
    params = {"MsgId": message_id, "status": "404", "idx": response_id}
    answers = []
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
        for path in (
            f"/callbacks/smsapi/{tenants.a_name}/{b_token}",  # B's token on A's path
            f"/callbacks/smsapi/{tenants.a_name}/{a_token[:-1]}x",
            f"/callbacks/smsapi/{tenants.a_name}/",
            f"/callbacks/smsapi/NoSuchPbx/{signer.token('NoSuchPbx')}",
            f"/callbacks/smsapi/{tenants.a_name}/{a_token}extra",
        ):
            answers.append(await client.get(path, params=params))
    assert [a.status_code for a in answers] == [404] * 5
    # An unknown PBX with a valid token answers exactly like a wrong token.
    assert answers[3].content == answers[0].content
    assert await sms_events(server, tenants.a_name) == []


# -- restart, polling --------------------------------------------------------------------------


async def test_server_restarted_between_send_and_report(tmp_path: Path) -> None:
    fake = FakeSmsapi()
    await fake.start()
    settings = rig_settings(tmp_path, fake)
    tenants = Tenants()
    first = await start_rig_server(settings, tenants)
    try:
        response = await send_sms(first, tenants.a_key, to="600100200", body="przed restartem")
        response_id = response.json()["responseId"]
        message_id = fake.by_idx(response_id).id
        await fake.report((message_id, "ACCEPTED"))
        before = await sms_events(first, tenants.a_name)
        tenant = await first.runtime.tenants.require(tenants.a_name)
        last_id_before = await first.runtime.hub.last_id(tenant)
    finally:
        await first.stop()
    second = await start_rig_server(settings, tenants, fresh=False)
    try:
        answer = await fake.report((message_id, "DELIVERED"), via=second.url)
        assert (answer.status_code, answer.text) == (200, "OK")
        await expect_statuses(second, tenants.a_name, response_id, ["ACCEPTED", "DELIVERED"])
        tenant = await second.runtime.tenants.require(tenants.a_name)
        assert await second.runtime.hub.last_id(tenant) > last_id_before  # ids go on
        assert [e["status"] for e in before] == ["ACCEPTED"]
        message = await stored(second, tenants.a_name, response_id)
        assert message.status is SmsStatus.DELIVERED
    finally:
        await second.stop()
        await fake.stop()


async def test_poller_follows_statuses_where_callbacks_cannot_reach(tmp_path: Path) -> None:
    async with rig(tmp_path, callbacks=False) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        response_id, message_id = await send_one(opened)
        assert "notify_url" not in fake.sends()[0]
        fake.set_status(message_id, "SENT")

        async def seen(expected: list[str]) -> bool:
            return await statuses(server, tenants.a_name, response_id) == expected

        await eventually(lambda: seen(["SENT"]))
        fake.set_status(message_id, "DELIVERED")
        await eventually(lambda: seen(["SENT", "DELIVERED"]))
        queried = {q["status"] for q in fake.queries()}
        assert message_id in queried
        item = await outbox(server, tenants.a_name, response_id)
        assert item.outbox is Outbox.ACCEPTED and item.status is SmsStatus.DELIVERED
        # Final: no more queries for it.
        await asyncio.sleep(0.3)
        count = len(fake.queries())
        await asyncio.sleep(0.3)
        assert len(fake.queries()) == count
        # Unchanged answers of the polls are not piled into the history.
        assert await history(server, tenants.a_name, response_id) == [
            SmsStatus.QUEUE,
            SmsStatus.SENT,
            SmsStatus.DELIVERED,
        ]


async def test_poller_reports_not_found_when_the_gateway_forgot(tmp_path: Path) -> None:
    async with rig(tmp_path, callbacks=False) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        kept_id, kept_message = await send_one(opened, to="600100201")
        lost_id, lost_message = await send_one(opened, to="600100202")
        del fake.messages[lost_message]  # its report expired at the gateway
        fake.set_status(kept_message, "DELIVERED")

        async def settled() -> bool:
            return await statuses(server, tenants.a_name, lost_id) == ["NOT_FOUND"] and (
                await statuses(server, tenants.a_name, kept_id) == ["DELIVERED"]
            )

        await eventually(settled)


@pytest.mark.parametrize("poll", [False])
async def test_without_callbacks_or_polling_unknown_after_max_age(
    tmp_path: Path, poll: bool
) -> None:
    async with rig(tmp_path, callbacks=False, poll=poll, sms_report_max_age=0.5) as opened:
        response_id, _ = await send_one(opened)

        async def unknown() -> bool:
            return await statuses(opened.server, opened.tenants.a_name, response_id) == ["UNKNOWN"]

        await eventually(unknown)
        assert opened.fake.queries() == []
