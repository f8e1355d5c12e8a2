"""/metrics of a real server: the numbers move when things happen, labels stay bounded and
name no tenant, and only the operator's scraper may read it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from cloudpbx.domain.events import QueueCalls
from cloudpbx.domain.records import SmsMessage
from cloudpbx.domain.states import SmsStatus
from cloudpbx.storage.sms import Outbox
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running
from tests.metrics_helpers import Scrape, parse, scrape, scrape_until
from tests.test_ws import a_path, publish, raw_ws, read_frame, ws_connect

HISTOGRAM = "cloudpbx_http_request_duration_seconds"
FAST = {"metrics_interval": 0.05, "metrics_queue_interval": 0.05}


@pytest.fixture
async def metered(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, Tenants]]:
    """A server that samples every 50 ms, with a small WebSocket buffer (4 KiB unsent)."""
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_buffer_size=4, **FAST)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        yield server, tenants


def latency_count(found: Scrape, route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return found.number("cloudpbx_http_request_duration_seconds_count", **labels)


async def test_the_exposition_parses_and_has_every_documented_family(metered) -> None:
    server, _ = metered
    found = await scrape(server.url)
    families = {name for name, _ in found.samples}
    for name in (
        "cloudpbx_workers",
        "cloudpbx_websocket_connections",
        "cloudpbx_websocket_deliveries_total",
        "cloudpbx_websocket_cutoffs_total",
        "cloudpbx_sms_outbox_messages",
        "cloudpbx_sms_outbox_oldest_age_seconds",
        "cloudpbx_sms_gateways",
        "cloudpbx_transcription_jobs",
        "cloudpbx_process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in families, name
    assert found.value("cloudpbx_workers") == 1
    assert found.value("cloudpbx_websocket_cutoffs_total", code="4008") == 0
    assert found.value("cloudpbx_websocket_cutoffs_total", code="1011") == 0
    assert found.value("cloudpbx_sms_gateways", status="ok") == 1


async def test_connections_and_deliveries_follow_a_websocket_client(metered) -> None:
    server, tenants = metered
    before = await scrape(server.url)
    delivered = before.number("cloudpbx_websocket_deliveries_total")
    async with ws_connect(server, a_path(tenants)) as ws:
        await scrape_until(server.url, lambda m: m.value("cloudpbx_websocket_connections") == 1)
        for n in range(3):
            await publish(server, tenants.a_name, [QueueCalls(f"Q{n}", n)])
            await ws.recv()
        moved = await scrape_until(
            server.url,
            lambda m: m.number("cloudpbx_websocket_deliveries_total") >= delivered + 3,
        )
        assert moved.number("cloudpbx_websocket_deliveries_total") == delivered + 3
    await scrape_until(server.url, lambda m: m.value("cloudpbx_websocket_connections") == 0)


async def test_a_slow_client_cut_off_with_4008_is_counted(metered) -> None:
    server, tenants = metered
    async with ws_connect(server, a_path(tenants), max_size=None) as ws:
        channel = f"pbx_{tenants.a_name}"
        await scrape_until(server.url, lambda _: server.runtime.bus.subscriber_count(channel) == 1)
        # 30 messages of ~400 kB the client does not read yet: more than loopback's socket
        # buffers hold, so the server's write buffer passes its 4 KiB limit.
        burst = [QueueCalls(f"Q{n}-" + "x" * 400_000, n) for n in range(30)]
        await publish(server, tenants.a_name, burst)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
    found = await scrape_until(
        server.url, lambda m: m.number("cloudpbx_websocket_cutoffs_total", code="4008") == 1
    )
    assert found.value("cloudpbx_websocket_cutoffs_total", code="1011") == 0


async def test_a_keepalive_timeout_is_counted_as_1011(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_ping_interval=0.2, ws_ping_timeout=0.4, **FAST)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        async with raw_ws(server, a_path(tenants)) as (reader, _writer, head):
            assert head.startswith(b"HTTP/1.1 101")
            opcode = 0
            while opcode != 0x8:  # never a pong: pings, then the close
                opcode, _payload = await read_frame(reader, 3)
        await scrape_until(
            server.url, lambda m: m.number("cloudpbx_websocket_cutoffs_total", code="1011") == 1
        )


async def test_request_latency_is_observed_under_the_route_template(metered) -> None:
    server, tenants = metered
    uniqueid = "1767225600.42"
    async with server.client(tenants.a_key) as client:
        assert (await client.get(f"/record/{uniqueid}")).status_code == 404
        assert (await client.get("/cdr")).status_code == 200
        assert (await client.head("/cdr")).status_code == 200
        assert (await client.get(f"/nothing/{tenants.a_name}")).status_code == 404
        assert (await client.request("PROPFIND", "/cdr")).status_code == 405
    async with server.client("not-a-key") as client:
        assert (await client.get("/cdr")).status_code == 401
    found = await scrape(server.url)
    assert latency_count(found, "/record/{uniqueid:path}", "GET", "4xx") == 1
    assert latency_count(found, "/cdr", "GET", "2xx") == 1
    assert latency_count(found, "/cdr", "HEAD", "2xx") == 1
    assert latency_count(found, "/cdr", "GET", "4xx") == 1
    assert latency_count(found, "/cdr", "other", "4xx") == 1
    assert latency_count(found, "unmatched", "GET", "4xx") >= 1
    assert (
        found.number(
            "cloudpbx_http_request_duration_seconds_sum", route="/cdr", method="GET", status="2xx"
        )
        > 0
    )
    # Bounded label values: templates, never what the client typed.
    routes = found.label_values(HISTOGRAM, "route")
    assert uniqueid not in str(routes) and tenants.a_name not in str(routes)
    assert found.label_values(HISTOGRAM, "method") <= {"GET", "HEAD", "POST", "other"}
    assert found.label_values(HISTOGRAM, "status") <= {"2xx", "3xx", "4xx", "5xx"}


async def test_the_sms_outbox_and_the_transcription_queue_are_measured(metered) -> None:
    server, tenants = metered
    runtime = server.runtime
    tenant = await runtime.tenants.require(tenants.a_name)
    created = datetime.now(UTC)
    message = SmsMessage("metrics1", "48500100200", "hi", False, SmsStatus.QUEUE, 1, None, created)
    later = created + timedelta(hours=1)  # a retry far ahead: it stays in the outbox
    await runtime.sms_store.add(
        tenant, message, gateway="simulator", outbox=Outbox.PENDING, due_at=later
    )
    assert runtime.transcription is not None
    await runtime.transcription.jobs.enqueue(tenant.id, "1767225600.7")
    found = await scrape_until(
        server.url,
        lambda m: (
            m.value("cloudpbx_sms_outbox_messages", state="pending") == 1
            and m.value("cloudpbx_transcription_jobs", status="queued") == 1
        ),
    )
    assert found.value("cloudpbx_sms_outbox_messages", state="unsure") == 0
    assert found.number("cloudpbx_sms_outbox_oldest_age_seconds") > 0
    assert found.value("cloudpbx_transcription_jobs", status="running") == 0


async def test_no_tenant_name_or_key_appears_in_the_metrics(metered) -> None:
    server, tenants = metered
    async with ws_connect(server, a_path(tenants)) as ws:
        await publish(server, tenants.a_name, [QueueCalls("Q", 1)])
        await ws.recv()
        async with server.client(tenants.a_key) as client:
            await client.get("/cdr", params={"datestart": "2026-01-01"})
            await client.get(f"/ws/pbx_{tenants.a_name}")
        found = await scrape(server.url)
    for secret in (tenants.a_name, tenants.b_name, tenants.a_key, tenants.b_key):
        assert secret not in found.text


# ------------------------------------------------------------------------------ access


async def test_only_loopback_clients_may_read_it_without_a_token(metered) -> None:
    server, _ = metered
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/metrics")).status_code == 200
        # Through a reverse proxy every client would look local: refused.
        proxied = await client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.7"})
        forwarded = await client.get("/metrics", headers={"Forwarded": "for=198.51.100.7"})
    for refused in (proxied, forwarded):
        assert refused.status_code == 403
        assert refused.json()["code"] == "metrics_local_only"


async def test_with_a_token_set_it_is_required(tmp_path: Path) -> None:
    token = "scrape-me-0123456789"
    settings = make_settings(tmp_path, metrics_token=token)
    async with running(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            missing = await client.get("/metrics")
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert missing.status_code == wrong.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert wrong.json() == {
            "error": "/metrics needs the metrics token as Authorization: Bearer",
            "code": "metrics_token",
        }
        found = await scrape(server.url, token)
        assert found.value("cloudpbx_workers") == 1


async def test_a_failing_exposition_is_a_503_not_a_500(metered) -> None:
    server, _ = metered
    broken: Any = server.runtime.metrics

    def fail() -> bytes:
        raise OSError("unreadable metrics file")

    broken.exposition = fail
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 503
    assert response.json() == {
        "error": "metrics unavailable: OSError",
        "code": "metrics_unavailable",
    }


def test_the_parser_reads_what_it_is_given() -> None:
    """The helper itself: a value it did not see is None, not 0."""
    found = parse('# TYPE x counter\nx_total{a="1"} 2.0\n')
    assert found.value("x_total", a="1") == 2.0
    assert found.value("x_total", a="2") is None
