"""/sendSMS refuses what the contract does not allow, before anything is stored.

`to`: nine digits, optionally after `48`/`+48`, single spaces or dashes between digit
groups; nothing else (a trailing newline, a tab). `body`: at most 6 SMS parts, SMSAPI's
own limit (918 GSM-7 septets or 402 UCS-2 characters). Every refusal is the documented
400 `Parameter is missing`, with `X-Error-Detail` naming the problem. Real server,
real HTTP; the SMSAPI case goes through the fake SMSAPI on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cloudpbx.domain.sms import body_problem, count_parts, normalize_recipient
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running
from tests.test_smsapi_send import rig

TENANTS = Tenants()


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """A server on the simulator gateway; PBX MojaCentrala's key in TENANTS."""
    settings = make_settings(tmp_path_factory.mktemp("sms-validation"))
    async with running(settings, prepare=lambda rt: create_tenants(rt, TENANTS)) as live:
        yield live


def _key(server: LiveServer) -> str:
    del server  # one server per module: its key is TENANTS'
    return TENANTS.a_key


async def _stored_rows(server: LiveServer) -> int:
    tenant = await server.runtime.tenants.require("MojaCentrala")
    return await server.runtime.calls.count_cdrs(tenant)


async def _post_raw(server: LiveServer, content: bytes) -> httpx.Response:
    async with server.client(_key(server)) as client:
        return await client.post(
            "/sendSMS",
            content=content,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )


@pytest.mark.parametrize(
    "to",
    [
        "600100200%0A",  # the tracker's case: a trailing newline
        "%0A600100200",
        "600100200%0D",
        "600%09100200",  # a tab between groups
        "600100200%20",  # a trailing space
        "%20600100200",
        "600%20%20100200",  # two spaces
        "600--100200",
        "+%2B48600100200",
        "48%0A600100200",
    ],
)
async def test_to_with_anything_but_digits_and_single_separators_is_refused(
    server: LiveServer, to: str
) -> None:
    before = await _stored_rows(server)
    response = await _post_raw(server, f"to={to}&body=x".encode())
    assert (response.status_code, response.text) == (400, "Parameter is missing")
    assert response.headers["x-error-detail"] == (
        "to must be a nine-digit mobile number, optionally after 48 or +48"
    )
    assert await _stored_rows(server) == before


@pytest.mark.parametrize(
    ("body", "parts", "alphabet"),
    [
        ("a" * 919, 7, "GSM-7"),
        ("ż" * 403, 7, "UCS-2"),
        ("€" * 460, 7, "GSM-7"),  # extension characters take two septets: 920
        ("Dzień dobry " * 40, 8, "UCS-2"),
    ],
    ids=["919-gsm7", "403-ucs2", "460-euro", "480-polish"],
)
async def test_body_longer_than_six_parts_is_400_naming_the_limit(
    server: LiveServer, body: str, parts: int, alphabet: str
) -> None:
    before = await _stored_rows(server)
    async with server.client(_key(server)) as client:
        response = await client.post("/sendSMS", data={"to": "600100200", "body": body})
    assert (response.status_code, response.text) == (400, "Parameter is missing")
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-error-detail"] == (
        f"body needs {parts} SMS parts ({alphabet}); the limit is 6 parts: "
        "918 GSM-7 or 402 UCS-2 characters"
    )
    assert await _stored_rows(server) == before  # nothing stored, nothing billed


@pytest.mark.parametrize("body", ["a" * 918, "ż" * 402, "€" * 459], ids=["918", "402", "459-euro"])
async def test_six_parts_exactly_are_sent(server: LiveServer, body: str) -> None:
    async with server.client(_key(server)) as client:
        response = await client.post("/sendSMS", data={"to": "600100200", "body": body})
    assert response.status_code == 200, response.headers.get("x-error-detail")
    assert response.json()["responseStatus"] == "QUEUE"


async def test_missing_fields_name_themselves(server: LiveServer) -> None:
    async with server.client(_key(server)) as client:
        no_to = await client.post("/sendSMS", data={"body": "x"})
        no_body = await client.post("/sendSMS", data={"to": "600100200"})
        empty_body = await client.post("/sendSMS", data={"to": "600100200", "body": ""})
    assert no_to.headers["x-error-detail"] == "to is missing"
    assert no_body.headers["x-error-detail"] == "body is missing"
    assert empty_body.headers["x-error-detail"] == "body is missing"  # empty = not given
    assert {r.text for r in (no_to, no_body, empty_body)} == {"Parameter is missing"}


async def test_too_long_never_reaches_smsapi(tmp_path: Path) -> None:
    async with rig(tmp_path) as opened:
        server, fake, tenants = opened.server, opened.fake, opened.tenants
        async with server.client(tenants.a_key) as client:
            response = await client.post("/sendSMS", data={"to": "600100200", "body": "a" * 919})
        assert response.status_code == 400
        assert fake.requests == []
        tenant = await server.runtime.tenants.require(tenants.a_name)
        assert await server.runtime.calls.count_cdrs(tenant) == 0


def test_rules_directly() -> None:
    assert normalize_recipient("600 100 200") == "48600100200"
    assert normalize_recipient("+48 600-100-200") == "48600100200"
    assert normalize_recipient("600100200\n") is None
    assert normalize_recipient("600100200\t") is None
    assert count_parts("a" * 918) == 6 and count_parts("a" * 919) == 7
    assert body_problem("a" * 918) is None and body_problem("") == "body is empty"
