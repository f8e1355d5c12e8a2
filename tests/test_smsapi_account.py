"""SMSAPI errors that are about the account or our settings, not about one message.

Error 103 (no credit; likewise 101, 102, 105, 110) holds the account's outbox: nothing is
failed, /healthz and the log say so, and the outbox resumes once a submission gets
through. Error 70 (our notify_url refused) is an operator alert: the message goes out
without it. A refused status lookup stops the lookups. Real server, fake SMSAPI, loopback.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudpbx.domain.states import SmsStatus
from cloudpbx.storage.sms import Outbox
from tests.live import LiveServer
from tests.test_smsapi_send import (
    ACCOUNT,
    Rig,
    eventually,
    expect_statuses,
    outbox,
    rig,
    send_sms,
    statuses,
)


async def healthz(server: LiveServer) -> dict[str, Any]:
    async with server.client() as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


async def _outbox_of(opened: Rig, response_id: str) -> Outbox:
    item = await outbox(opened.server, opened.tenants.a_name, response_id)
    assert item is not None
    state: Outbox = item.outbox
    return state


async def test_no_credit_holds_the_outbox_and_resumes_when_topped_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with rig(tmp_path) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        fake.out_of_credit = True
        ids = []
        for k in range(3):
            response = await send_sms(server, tenants.a_key, to=f"60010020{k}", body=f"nr {k}")
            assert response.status_code == 200, response.text
            assert response.json()["responseStatus"] == "QUEUE"
            assert response.json()["responseErrorMessage"] is None
            ids.append(response.json()["responseId"])

        # Held: one message found it out, the others were not even submitted; probes
        # (one message at a time) keep asking; nothing is failed.
        health = await healthz(server)
        assert health["status"] == "degraded"
        (entry,) = health["sms"]
        assert entry["gateway"] == "smsapi" and entry["status"] == "held"
        assert entry["error"] == "SMSAPI error 103: Insufficient credits on Your account"
        assert ACCOUNT not in str(health)  # /healthz is public: no account names
        await eventually(lambda: _probed(opened, 3))
        for response_id in ids:
            item = await outbox(server, tenants.a_name, response_id)
            assert item.status is SmsStatus.QUEUE and item.outbox is Outbox.PENDING
            assert await statuses(server, tenants.a_name, response_id) == []
        logged = [r for r in caplog.records if "account's sake" in r.getMessage()]
        assert len(logged) == 1 and logged[0].levelno == logging.ERROR
        assert ACCOUNT in logged[0].getMessage() and "103" in logged[0].getMessage()

        fake.out_of_credit = False
        for response_id in ids:
            await eventually(
                lambda rid=response_id: _is_accepted(opened, rid),  # type: ignore[misc]
                seconds=10,
            )
        assert sorted(m.idx or "" for m in fake.messages.values()) == sorted(ids)  # once each
        assert (await healthz(server))["sms"] == [{"gateway": "smsapi", "status": "ok"}]
        assert any("outbox resumes" in r.getMessage() for r in caplog.records)

        # Reports flow as usual afterwards.
        await fake.report((fake.by_idx(ids[0]).id, "DELIVERED"))
        await expect_statuses(server, tenants.a_name, ids[0], ["DELIVERED"])


async def _probed(opened: Rig, times: int) -> bool:
    return len(opened.fake.sends()) >= times


async def _is_accepted(opened: Rig, response_id: str) -> bool:
    return await _outbox_of(opened, response_id) is Outbox.ACCEPTED


@pytest.mark.parametrize("code", [101, 105])
async def test_other_account_errors_hold_too(tmp_path: Path, code: int) -> None:
    from tests.fakes.smsapi import Step

    async with rig(tmp_path) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        fake.script.append(Step("error", code))
        response = await send_sms(server, tenants.a_key, to="600100200", body="x")
        assert response.status_code == 200 and response.json()["responseStatus"] == "QUEUE"
        response_id = response.json()["responseId"]
        # The next probe gets through (the script is used up): resumed, sent once.
        await eventually(lambda: _is_accepted(opened, response_id), seconds=10)
        assert [s["idx"] for s in fake.sends()] == [response_id, response_id]
        assert (await healthz(server))["status"] == "ok"


async def test_notify_url_refused_is_an_alert_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with rig(tmp_path) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        fake.refuse_notify_url = True
        first = await send_sms(server, tenants.a_key, to="600100200", body="pierwsza")
        assert first.status_code == 200 and first.json()["responseStatus"] == "QUEUE"
        first_id = first.json()["responseId"]
        assert await _outbox_of(opened, first_id) is Outbox.ACCEPTED
        refused, resent = fake.sends()
        assert "notify_url" in refused and "notify_url" not in resent
        assert resent["idx"] == first_id

        second = await send_sms(server, tenants.a_key, to="600100201", body="druga")
        assert second.status_code == 200
        assert "notify_url" not in fake.sends()[-1] and len(fake.sends()) == 3

        health = await healthz(server)
        assert health["status"] == "degraded"
        (entry,) = health["sms"]
        assert entry["status"] == "alert" and "error 70" in entry["error"]
        alerts = [r for r in caplog.records if "delivery-report URL" in r.getMessage()]
        assert len(alerts) == 1 and alerts[0].levelno == logging.ERROR


async def test_refused_status_lookups_stop_and_callbacks_still_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SMSAPI no longer supports status lookups: a refusal is logged once and no
    lookup follows; the callback still settles the message."""
    caplog.set_level(logging.INFO)
    async with rig(tmp_path, poll=True) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        fake.refuse_lookups = 110
        response = await send_sms(server, tenants.a_key, to="600100200", body="x")
        response_id = response.json()["responseId"]
        await eventually(lambda: _queried(opened))
        await asyncio.sleep(0.5)  # several poll intervals (0.1 s)
        assert len(fake.queries()) == 1
        refusals = [r for r in caplog.records if "status lookups refused" in r.getMessage()]
        assert len(refusals) == 1 and "110" in refusals[0].getMessage()
        await fake.report((fake.by_idx(response_id).id, "DELIVERED"))
        await expect_statuses(server, tenants.a_name, response_id, ["DELIVERED"])


async def _queried(opened: Rig) -> bool:
    return bool(opened.fake.queries())


async def test_polling_is_off_by_default(tmp_path: Path) -> None:
    """Callbacks first: an account without `poll = true` never asks for statuses."""
    async with rig(tmp_path, poll=None) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        response = await send_sms(server, tenants.a_key, to="600100200", body="x")
        response_id = response.json()["responseId"]
        assert await _outbox_of(opened, response_id) is Outbox.ACCEPTED
        await asyncio.sleep(0.5)  # several poll intervals (0.1 s), had polling been on
        assert fake.queries() == []


# -- the fake itself: what SMSAPI's official clients send and get -----------------------------


async def test_fake_takes_recipient_lists_and_nine_digit_numbers(tmp_path: Path) -> None:
    async with rig(tmp_path) as opened:
        fake = opened.fake
        headers = {"Authorization": f"Bearer {fake.token}"}
        async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
            many = await client.post(
                "/sms.do",
                data={"to": "600100200,+48600100201,48600100202", "message": "x", "format": "json"},
            )
            too_long = await client.post(
                "/sms.do", data={"to": "600100200", "message": "a" * 919, "format": "json"}
            )
            six_parts = await client.post(
                "/sms.do", data={"to": "600100200", "message": "ż" * 402, "format": "json"}
            )
        answer = many.json()
        assert answer["count"] == 3
        assert [e["number"] for e in answer["list"]] == [
            "48600100200",
            "48600100201",
            "48600100202",
        ]
        assert all(isinstance(e["points"], str) for e in answer["list"])
        assert too_long.json()["error"] == 11
        assert six_parts.json()["parts"] == 6
        async with httpx.AsyncClient(base_url=fake.url) as client:
            bad = await client.post(
                "/sms.do",
                data={"to": "600100200", "message": "x"},
                headers={"Authorization": "Bearer wrong"},
            )
        assert bad.status_code == 401 and bad.json()["error"] == 101
