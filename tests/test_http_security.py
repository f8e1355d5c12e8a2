"""HTTP hardening on a live server: head limits and deadline, slow-loris, body limits, the
failed-authentication throttle, response headers, CORS, redirects, proxies, file mode."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from cloudpbx.api.throttle import AuthThrottle
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running

HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[LiveServer, Tenants]]:
    tenants = Tenants()
    settings = make_settings(tmp_path, **overrides)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        yield server, tenants


async def exchange(server: LiveServer, *chunks: bytes) -> bytes:
    """Send `chunks` on a fresh connection; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection(HOST, server.port)

    async def send_all() -> None:
        with contextlib.suppress(ConnectionError):
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()

    sending = asyncio.create_task(send_all())
    try:
        return await asyncio.wait_for(_read_to_eof(reader), 20)
    finally:
        sending.cancel()
        writer.close()


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


def status_and_body(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


# -- the request head ------------------------------------------------------------------------


async def test_oversized_header_is_431_and_read_no_further(tmp_path: Path) -> None:
    async with serve(tmp_path, http_max_head_bytes=8192) as (server, _):
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
        # 4 MiB announced in 64 KiB pieces: the server answers and closes long before.
        answer = await exchange(server, head, *([b"a" * 65536] * 64))
        status, body = status_and_body(answer)
        assert status == 431
        assert body == {"error": "request head over 8192 bytes", "code": "header_too_large"}
        whole = await exchange(server, head + b"a" * 20_000 + b"\r\n\r\n")  # in one read
        assert status_and_body(whole)[0] == 431
        # A head just under the limit is still served.
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get("/healthz", headers={"X-Big": "a" * 7000})
        assert response.status_code == 200


async def test_too_many_header_lines_is_431(tmp_path: Path) -> None:
    async with serve(tmp_path, http_max_headers=50) as (server, _):
        lines = b"".join(b"X-H%d: 1\r\n" % i for i in range(51))
        answer = await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        status, body = status_and_body(answer)
        assert status == 431
        assert body["error"] == "more than 50 header lines"


async def test_head_deadline_closes_silent_and_slow_connections(tmp_path: Path) -> None:
    async with serve(tmp_path, http_head_timeout=1.0) as (server, _):
        started = time.monotonic()
        silent = await exchange(server)  # connects, sends nothing
        partial = await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert silent == b"" and partial == b""  # closed without an answer
        assert time.monotonic() - started < 15


async def test_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    async with serve(tmp_path, http_keep_alive_timeout=1) as (server, _):
        answer = await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")  # and then the server closed it


async def test_head_deadline_spares_kept_alive_connections_between_requests(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, http_head_timeout=1.0, http_keep_alive_timeout=30) as (server, _):
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            for _ in range(2):  # idle longer than the head deadline in between: kept alive
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await asyncio.wait_for(reader.readexactly(length), 10)
                await asyncio.sleep(2.5)
        finally:
            writer.close()


async def test_slow_loris_is_shed_while_normal_requests_are_served(tmp_path: Path) -> None:
    async with serve(tmp_path, http_head_timeout=2.0) as (server, _):
        sockets = [await asyncio.open_connection(HOST, server.port) for _ in range(300)]
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000

        async def drip(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                for byte in request:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dripping = [asyncio.create_task(drip(writer)) for _, writer in sockets]
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                for _ in range(5):
                    assert (await client.get("/healthz")).status_code == 200
            # Every slow connection is closed by the server (EOF), well before its head ends.
            closed = await asyncio.wait_for(
                asyncio.gather(*(_read_to_eof(reader) for reader, _ in sockets)), 30
            )
            assert closed == [b""] * len(sockets)
        finally:
            for task in dripping:
                task.cancel()
            for _, writer in sockets:
                writer.close()


async def test_websocket_upgrade_gets_the_head_limits(tmp_path: Path) -> None:
    async with serve(tmp_path, http_max_head_bytes=4096) as (server, tenants):
        path = f"/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
        head = (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        ).encode()
        answer = await exchange(server, head + b"X-Big: " + b"a" * 8000 + b"\r\n\r\n")
        assert status_and_body(answer)[0] == 431


# -- bodies ------------------------------------------------------------------------------------


async def test_body_limits_per_endpoint(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, http_max_form_bytes=4096) as (server, tenants),
        server.client(tenants.a_key) as client,
    ):
        big = await client.post("/sendSMS", data={"to": "600100200", "body": "a" * 5000})
        assert big.status_code == 413
        assert big.json() == {
            "error": "request body over the limit of 4096 bytes",
            "code": "too_large",
        }
        assert big.headers["connection"] == "close"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            for _ in range(10):
                yield b"a" * 1000

        chunked = await client.post(
            "/sendSMS",
            content=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert chunked.status_code == 413
        assert chunked.json()["code"] == "too_large"

        stray = await client.request("GET", "/cdr", content=b"x" * 10)
        assert stray.status_code == 413
        assert stray.json()["error"] == "this endpoint takes no request body"

        ok = await client.post("/sendSMS", data={"to": "600100200", "body": "hello"})
        assert ok.status_code == 200


# -- failed authentications --------------------------------------------------------------------


async def test_failed_authentications_are_throttled_per_address(tmp_path: Path) -> None:
    async with serve(tmp_path, auth_fail_limit=3, auth_fail_window=60) as (server, tenants):
        async with server.client("cpbx_wrong-key-guess-000") as guesser:
            codes = [(await guesser.get("/cdr")).status_code for _ in range(2)]
            assert codes == [401, 401]
            # A refused WebSocket upgrade is a failed authentication too.
            channel = f"{server.ws_url}/ws/pbx_{tenants.a_name}"
            with pytest.raises(InvalidStatus) as wrong:
                await websockets.connect(f"{channel}?pbxkey=cpbx_wrong", open_timeout=10)
            assert wrong.value.response.status_code == 401
            refused = await guesser.get("/cdr")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 20
        assert refused.json()["code"] == "too_many_failures"
        # The address is refused whatever it sends, a good key or a spoofed
        # X-Forwarded-For (127.0.0.1 is no trusted proxy here), before any work.
        async with server.client(tenants.a_key) as client:
            assert (await client.get("/cdr")).status_code == 429
            spoofed = await client.get("/cdr", headers={"X-Forwarded-For": "203.0.113.9"})
            assert spoofed.status_code == 429
        # The WebSocket upgrade is refused as plain HTTP, before the handshake.
        url = f"{server.ws_url}/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
        with pytest.raises(InvalidStatus) as refusal:
            await websockets.connect(url, open_timeout=10)
        assert refusal.value.response.status_code == 429
        assert refusal.value.response.headers["Retry-After"]
        assert orjson.loads(refusal.value.response.body)["code"] == "too_many_failures"


async def test_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    overrides = {"auth_fail_limit": 2, "trusted_proxies": "127.0.0.1"}
    async with serve(tmp_path, **overrides) as (server, tenants):
        async with server.client("cpbx_wrong-key-guess-000") as client:
            for _ in range(2):
                response = await client.get("/cdr", headers={"X-Forwarded-For": "203.0.113.9"})
                assert response.status_code == 401
            blocked = await client.get("/cdr", headers={"X-Forwarded-For": "203.0.113.9"})
            assert blocked.status_code == 429
        async with server.client(tenants.a_key) as client:
            other = await client.get("/cdr", headers={"X-Forwarded-For": "198.51.100.7"})
            assert other.status_code == 200  # another client behind the same proxy


def test_throttle_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    throttle = AuthThrottle(4, 60, max_addresses=3, clock=lambda: now[0])
    for _ in range(4):
        assert throttle.retry_after("a") == 0
        throttle.failed("a")
    assert throttle.retry_after("a") == 15  # one failure back every 15 s
    now[0] += 15
    assert throttle.retry_after("a") == 0
    for address in ("b", "c", "d"):  # a fourth address drops the least recent, "a"
        throttle.failed(address)
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after("a") == 0  # it started again from a full bucket


# -- response headers, CORS, redirects, /docs --------------------------------------------------


async def test_security_headers_on_data_and_errors(live: tuple[LiveServer, Tenants]) -> None:
    server, tenants = live
    async with server.client(tenants.a_key) as client:
        for path in ("/cdr?date_from=2024-01-01&date_to=2024-01-02", "/record/1.1", "/nowhere"):
            response = await client.get(path)
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert response.headers["cache-control"] == "no-store", path
            assert "default-src 'none'" in response.headers["content-security-policy"], path
            assert "access-control-allow-origin" not in response.headers


async def test_docs_work_offline_under_a_csp(live: tuple[LiveServer, Tenants]) -> None:
    server, _ = live
    async with server.client() as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        policy = page.headers["content-security-policy"]
        assert (
            "script-src 'self' 'sha256-" in policy
            and "unsafe-inline" not in policy.split("style-src")[0]
        )
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
            assert f"/docs/assets/{asset}" in page.text
            response = await client.get(f"/docs/assets/{asset}")
            assert response.status_code == 200 and len(response.content) > 1000, asset
            assert "no-store" not in response.headers.get("cache-control", "")
        bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
        assert "SwaggerUIBundle" in bundle.text


async def test_trailing_slash_is_not_redirected_to_the_host_header(
    live: tuple[LiveServer, Tenants],
) -> None:
    server, tenants = live
    async with server.client(tenants.a_key) as client:
        response = await client.get("/cdr/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


async def test_cors_allow_list(tmp_path: Path) -> None:
    async with (
        serve(tmp_path, cors_origins=["https://crm.example"]) as (server, _),
        server.client() as client,
    ):
        preflight = {"Access-Control-Request-Method": "GET"}
        allowed = await client.options(
            "/cdr", headers={"Origin": "https://crm.example", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://crm.example"
        other = await client.options(
            "/cdr", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers


def file_modes(folder: Path, pattern: str) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.glob(pattern)}


async def test_sqlite_file_is_private(live: tuple[LiveServer, Tenants], tmp_path: Path) -> None:
    modes = file_modes(tmp_path, "cloudpbx.db*")
    assert "cloudpbx.db" in modes
    assert modes == dict.fromkeys(modes, 0o600)
