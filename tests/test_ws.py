"""`/ws/pbx_{NAME}` over real loopback connections: message format, auth, curl, pings.

Clients are real: the `websockets` library, raw sockets speaking RFC 6455 by hand, and the
provider's document's own `curl` line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import os
import struct
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cloudpbx.domain.events import (
    ConferenceMember,
    Event,
    ExtStatus,
    QueueCalls,
    QueueMember,
    SmsSendResponse,
    Subscriber,
)
from cloudpbx.domain.states import DeviceState, MemberStatus, SmsStatus
from cloudpbx.ports.bus import WireMessage
from cloudpbx.services.events import EventHub
from cloudpbx.storage.tenants import Tenant
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running

DOC_KEY = "SGVsbG8sIHdvcmxkIQ=="  # the provider's document's Sec-WebSocket-Key (13 bytes)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# ---------------------------------------------------------------------------- helpers


def ws_connect(server: LiveServer, target: str, **kwargs: Any) -> connect:
    """A `websockets` client on `target` (path and query); no proxy from the environment."""
    options: dict[str, Any] = {"proxy": None, "open_timeout": 3, "close_timeout": 1}
    options.update(kwargs)
    return connect(server.ws_url + target, **options)


def a_path(tenants: Tenants, query: str = "") -> str:
    path = f"/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
    return path + ("&" + query if query else "")


async def recv_json(ws: ClientConnection, seconds: float = 2.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), seconds)
    assert isinstance(raw, str), "messages are text frames"
    value: dict[str, Any] = orjson.loads(raw)
    return value


async def recv_ids(ws: ClientConnection, count: int, seconds: float = 3.0) -> list[int]:
    async def collect() -> list[int]:
        return [(await recv_json(ws))["id"] for _ in range(count)]

    return await asyncio.wait_for(collect(), seconds)


_tenants: weakref.WeakKeyDictionary[EventHub, dict[str, Tenant]] = weakref.WeakKeyDictionary()


async def publish(server: LiveServer, pbx: str, events: Sequence[Event]) -> list[WireMessage]:
    """Publish through the server's hub, as a PBX backend does (the tenant looked up once),
    and wait for the group commit: then the messages are stored, in the history and sent."""
    known = _tenants.setdefault(server.runtime.hub, {})
    if pbx not in known:
        known[pbx] = await server.runtime.tenants.require(pbx)
    messages = await server.runtime.hub.publish(known[pbx], events)
    await server.runtime.hub.flush()
    return messages


async def wait_until(predicate: Callable[[], bool], seconds: float = 2.0) -> None:
    """Poll `predicate` (server-side state) until it holds; fail after `seconds`."""
    for _ in range(int(seconds / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {seconds} s")


def subscribers(server: LiveServer, pbx: str = "MojaCentrala") -> int:
    return server.runtime.bus.subscriber_count(f"pbx_{pbx}")


def ext(n: int, state: DeviceState = DeviceState.IN_USE) -> ExtStatus:
    return ExtStatus(str(100 + n % 900), state)


async def publish_ext(server: LiveServer, pbx: str, count: int) -> list[int]:
    """`count` messages (one extstatus each); returns their ids."""
    ids: list[int] = []
    for n in range(count):
        ids += [m.id for m in await publish(server, pbx, [ext(n)])]
    return ids


async def expect_refusal(server: LiveServer, target: str, **kwargs: Any) -> tuple[int, Any]:
    """Connect and expect an HTTP answer instead of an upgrade: (status, JSON body)."""
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(server, target, **kwargs):
            pass
    response = info.value.response
    body = orjson.loads(response.body) if response.body else None
    if body is not None:
        assert response.headers["content-type"].startswith("application/json")
    return response.status_code, body


# Raw RFC 6455 by hand: the server's frames are unmasked, the client's must be masked.


@contextlib.asynccontextmanager
async def raw_ws(
    server: LiveServer, target: str, key: str = DOC_KEY
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        request = (
            f"GET {target} HTTP/1.1\r\n"
            "Host: pbxvisor1.cloudpbx.pl\r\n"
            "Origin: https://pbxvisor1.cloudpbx.pl\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: websocket\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        writer.write(request.encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        yield reader, writer, head
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_frame(reader: asyncio.StreamReader, seconds: float = 2.0) -> tuple[int, bytes]:
    """(opcode, payload) of the next server frame."""

    async def read() -> tuple[int, bytes]:
        first, second = await reader.readexactly(2)
        assert first & 0x80, "the server sends unfragmented frames"
        assert not second & 0x80, "server frames are never masked"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        return first & 0x0F, await reader.readexactly(length)

    return await asyncio.wait_for(read(), seconds)


def client_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


@pytest.fixture(scope="module")
async def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[LiveServer, Tenants]]:
    """One server for this module (tests here only compare ids with what they publish)."""
    tenants = Tenants()
    settings = make_settings(tmp_path_factory.mktemp("ws"))
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        yield server, tenants


# ----------------------------------------------------------------- message format


def every_type() -> list[Event]:
    return [
        Subscriber("MojaCentrala-101", DeviceState.RINGING, "600100200", "Jan Nowak"),
        ExtStatus("101", DeviceState.RINGING),
        QueueCalls("Kolejka1", 1),
        QueueMember(
            "MojaCentrala-101",
            "Kolejka1",
            MemberStatus.RINGING,
            3,
            dynamic=False,
            paused=True,
            name="Agent 1",
            location="SIP/MojaCentrala-101",
            reason="Przerwa",
        ),
        ConferenceMember("SIP/MojaCentrala-101-0005f005", "add", "SesjaRady", "Jan Nowak", "101"),
        SmsSendResponse("3292468348841377230", "48600100200", SmsStatus.SENT),
    ]


async def recv_texts(ws: ClientConnection, count: int) -> tuple[list[int], dict[str, Any]]:
    """`count` messages of one event each: their ids, and their events by type."""
    ids: list[int] = []
    text: dict[str, Any] = {}
    for _ in range(count):
        message = await recv_json(ws)
        assert set(message) == {"id", "channel", "text"}
        assert type(message["id"]) is int
        assert message["channel"] == "pbx_MojaCentrala"
        [(kind, value)] = message["text"].items()  # one event per message
        ids.append(message["id"])
        text[kind] = value
    return ids, text


async def test_one_change_of_every_type_is_one_message_per_event_with_exact_types(live) -> None:
    server, tenants = live
    async with ws_connect(server, a_path(tenants)) as ws:
        sent = await publish(server, tenants.a_name, every_type())
        ids, text = await recv_texts(ws, 6)
    assert ids == [m.id for m in sent]
    assert ids == list(range(ids[0], ids[0] + 6))  # each its own id, consecutive
    assert list(text) == [
        "subscriber",
        "extstatus",
        "queue",
        "qmember",
        "cmember",
        "smsSendResponse",
    ]
    assert text["subscriber"] == {
        "peer": "MojaCentrala-101",
        "statusValue": 8,
        "connectPeerNumber": "600100200",
        "connectPeerName": "Jan Nowak",
    }
    assert type(text["subscriber"]["statusValue"]) is int
    assert text["extstatus"] == {"exten": "101", "status": 8}
    assert type(text["extstatus"]["status"]) is int
    assert text["queue"] == {"peer": "Kolejka1", "calls": "1"}
    assert text["qmember"] == {
        "peer": "MojaCentrala-101",
        "queue": "Kolejka1",
        "m_status": "6",
        "m_ct": "3",
        "m_mbshp": "static",
        "m_paused": "1",
        "m_reason": "Przerwa",
        "m_name": "Agent 1",
        "m_location": "SIP/MojaCentrala-101",
    }
    assert text["cmember"] == {
        "channel": "SIP/MojaCentrala-101-0005f005",
        "action": "add",
        "conference": "SesjaRady",
        "callerIDName": "Jan Nowak",
        "callerIDNum": "101",
    }
    assert text["smsSendResponse"] == {
        "MsgId": "3292468348841377230",
        "to": "48600100200",
        "status": "SENT",
    }


async def test_bundling_opt_in_puts_one_change_in_one_message(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_bundle_events=True)
    async with (
        running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server,
        ws_connect(server, a_path(tenants)) as ws,
    ):
        [sent] = await publish(server, tenants.a_name, every_type())
        message = await recv_json(ws)
    assert message["id"] == sent.id
    assert list(message["text"]) == [e.event_type for e in every_type()]
    assert message["text"]["subscriber"]["connectPeerNumber"] == "600100200"


async def test_the_sample_php_clients_reading_works(live) -> None:
    """What the provider's PHP client reads: `text` object, peer minus `PBX-` prefix."""
    server, tenants = live
    async with ws_connect(server, a_path(tenants)) as ws:
        await publish(
            server,
            tenants.a_name,
            [
                Subscriber("MojaCentrala-105", DeviceState.IN_USE, "102", ""),
                QueueMember(
                    "MojaCentrala-105",
                    "Kolejka1",
                    MemberStatus.IN_USE,
                    7,
                    dynamic=True,
                    paused=False,
                    name="Agent",
                    location="SIP/MojaCentrala-105",
                ),
            ],
        )
        _, text = await recv_texts(ws, 2)
    prefix = tenants.a_name + "-"
    assert text["subscriber"]["peer"].removeprefix(prefix) == "105"
    assert text["subscriber"]["connectPeerNumber"] == "102"
    assert text["qmember"]["peer"].removeprefix(prefix) == "105"
    assert text["qmember"]["m_ct"] == "7"
    assert "m_reason" not in text["qmember"]


async def test_each_event_goes_in_its_own_message_with_increasing_ids(live) -> None:
    server, tenants = live
    async with ws_connect(server, a_path(tenants)) as ws:
        sent = await publish(
            server,
            tenants.a_name,
            [
                Subscriber("MojaCentrala-101", DeviceState.IDLE),
                ExtStatus("101", DeviceState.IDLE),
                Subscriber("MojaCentrala-102", DeviceState.IN_USE),
                ExtStatus("102", DeviceState.IN_USE),
                ExtStatus("103", DeviceState.BUSY),
            ],
        )
        assert len(sent) == 5
        messages = [await recv_json(ws) for _ in range(5)]
        await publish(server, tenants.a_name, [QueueCalls("K", 2)])
        messages.append(await recv_json(ws))
    ids = [m["id"] for m in messages]
    assert ids == [m.id for m in sent] + [messages[-1]["id"]]
    assert all(b > a for a, b in itertools.pairwise(ids))
    assert [list(m["text"]) for m in messages] == [
        ["subscriber"],
        ["extstatus"],
        ["subscriber"],
        ["extstatus"],
        ["extstatus"],
        ["queue"],
    ]
    assert messages[4]["text"]["extstatus"] == {"exten": "103", "status": 2}


async def test_ids_increase_strictly_over_many_messages(live) -> None:
    server, tenants = live
    async with ws_connect(server, a_path(tenants)) as ws:
        ids = await publish_ext(server, tenants.a_name, 300)
        received = await recv_ids(ws, 300)
    assert received == ids
    assert all(b > a for a, b in itertools.pairwise(received))


async def test_a_pbx_never_sees_another_pbxs_events(live) -> None:
    server, tenants = live
    b_path = f"/ws/pbx_{tenants.b_name}?pbxkey={tenants.b_key}"
    async with ws_connect(server, a_path(tenants)) as a_ws, ws_connect(server, b_path) as b_ws:
        await publish(server, tenants.b_name, [ExtStatus("200", DeviceState.RINGING)])
        [a_msg] = await publish(server, tenants.a_name, [ExtStatus("100", DeviceState.IDLE)])
        first_a = await recv_json(a_ws)
        first_b = await recv_json(b_ws)
    assert first_a["id"] == a_msg.id and first_a["channel"] == "pbx_MojaCentrala"
    assert first_b["channel"] == "pbx_InnaCentrala"
    assert first_b["text"] == {"extstatus": {"exten": "200", "status": 8}}


async def test_permessage_deflate_offered_is_declined(live) -> None:
    """Browsers offer it; the 101 comes without it and messages are plain text frames."""
    server, tenants = live
    async with ws_connect(server, a_path(tenants), compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        [sent] = await publish(server, tenants.a_name, [ext(1)])
        assert (await recv_json(ws))["id"] == sent.id


async def test_client_messages_are_ignored(live) -> None:
    server, tenants = live
    async with ws_connect(server, a_path(tenants)) as ws:
        await ws.send("hello")
        await ws.send(b"\x00\x01")
        [sent] = await publish(server, tenants.a_name, [ext(1)])
        assert (await recv_json(ws))["id"] == sent.id


# --------------------------------------------------------------------------- auth


async def test_key_in_query_or_bearer_header_is_accepted(live) -> None:
    server, tenants = live
    async with ws_connect(server, a_path(tenants)) as by_query:
        assert by_query.response is not None and by_query.response.status_code == 101
        async with ws_connect(
            server,
            f"/ws/pbx_{tenants.a_name}",
            additional_headers={"Authorization": f"Bearer {tenants.a_key}"},
        ) as by_header:
            [sent] = await publish(server, tenants.a_name, [ext(1)])
            assert (await recv_json(by_query))["id"] == sent.id
            assert (await recv_json(by_header))["id"] == sent.id


async def test_missing_unknown_or_revoked_key_is_401_before_the_upgrade(live) -> None:
    server, tenants = live
    base = f"/ws/pbx_{tenants.a_name}"
    cases: list[tuple[str, dict[str, str], str]] = [
        (base, {}, "missing_key"),
        (base + "?pbxkey=", {}, "missing_key"),
        (base, {"Authorization": "Bearer "}, "missing_key"),
        (base, {"Authorization": f"Basic {tenants.a_key}"}, "missing_key"),
        (base + "?pbxkey=cpbx_unknown-key-000000", {}, "invalid_key"),
        (base, {"Authorization": "Bearer cpbx_unknown-key-000000"}, "invalid_key"),
        (base + f"?pbxkey={tenants.revoked_key}", {}, "invalid_key"),
        (base, {"Authorization": f"Bearer {tenants.revoked_key}"}, "invalid_key"),
        # A bad query key is not rescued by a good header: the query is what counts.
        (
            base + "?pbxkey=nope-nope-nope",
            {"Authorization": f"Bearer {tenants.a_key}"},
            "invalid_key",
        ),
    ]
    for target, headers, code in cases:
        status, body = await expect_refusal(server, target, additional_headers=headers)
        assert (status, body["code"]) == (401, code), (target, headers)
        assert body["error"]


async def test_key_of_another_pbx_is_403(live) -> None:
    server, tenants = live
    status, body = await expect_refusal(server, f"/ws/pbx_{tenants.a_name}?pbxkey={tenants.b_key}")
    assert (status, body["code"]) == (403, "wrong_pbx")
    status, _ = await expect_refusal(
        server,
        f"/ws/pbx_{tenants.a_name}",
        additional_headers={"Authorization": f"Bearer {tenants.b_key}"},
    )
    assert status == 403


async def test_unknown_pbx_is_403_like_a_foreign_one(live) -> None:
    """No existence leak: an unknown name answers exactly like another tenant's PBX."""
    server, tenants = live
    unknown = await expect_refusal(server, f"/ws/pbx_NieMaTakiej?pbxkey={tenants.a_key}")
    foreign = await expect_refusal(server, f"/ws/pbx_{tenants.b_name}?pbxkey={tenants.a_key}")
    assert unknown == foreign
    assert unknown[0] == 403


async def test_bad_channel_path_is_404(live) -> None:
    server, tenants = live
    for path in (
        "/ws/foo",
        "/ws/pbx_",
        "/ws/MojaCentrala",
        "/ws/pbx_MojaCentrala/extra",
        "/ws/pbx_a%20b",
        "/ws/PBX_MojaCentrala",
    ):
        status, body = await expect_refusal(server, f"{path}?pbxkey={tenants.a_key}")
        assert (status, body["code"]) == (404, "unknown_channel"), path


async def test_malformed_last_event_id_is_400(live) -> None:
    server, tenants = live
    for value in ("abc", "-1", "1.5", "%C2%B2", "1" * 19, "0x10", "1%202", "+1"):
        status, body = await expect_refusal(server, a_path(tenants, f"last_event_id={value}"))
        assert (status, body["code"]) == (400, "invalid_last_id"), value
    for value in ("abc", "-1", "1.5", "1" * 19, "0x10", "1 2"):
        status, body = await expect_refusal(
            server, a_path(tenants), additional_headers={"Last-Event-ID": value}
        )
        assert (status, body["code"]) == (400, "invalid_last_id"), value


async def test_auth_is_checked_before_the_last_event_id(live) -> None:
    server, tenants = live
    status, _ = await expect_refusal(server, f"/ws/pbx_{tenants.a_name}?last_event_id=abc")
    assert status == 401


async def test_refused_connections_leave_no_subscription(live) -> None:
    server, tenants = live
    for target in (
        f"/ws/pbx_{tenants.a_name}",
        f"/ws/pbx_{tenants.a_name}?pbxkey={tenants.b_key}",
        a_path(tenants, "last_event_id=x"),
    ):
        await expect_refusal(server, target)
    await wait_until(lambda: subscribers(server) == 0)


async def test_subscription_is_released_when_the_client_leaves(live) -> None:
    server, tenants = live
    await wait_until(lambda: subscribers(server) == 0)
    for _ in range(3):
        async with ws_connect(server, a_path(tenants)):
            await wait_until(lambda: subscribers(server) == 1)
        await wait_until(lambda: subscribers(server) == 0)
    # A client that vanishes without a close frame is noticed too.
    async with raw_ws(server, a_path(tenants)) as (_reader, writer, head):
        assert head.startswith(b"HTTP/1.1 101")
        await wait_until(lambda: subscribers(server) == 1)
        writer.transport.abort()
        await wait_until(lambda: subscribers(server) == 0)


# ------------------------------------------------------------------- the curl line


async def test_the_documents_curl_handshake(live) -> None:
    """The document's own `curl` line (Sec-WebSocket-Key of 13 bytes) gets a 101 and the
    event as an unmasked text frame."""
    server, tenants = live
    url = f"http://127.0.0.1:{server.port}/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
    # fmt: off
    argv = [
        "curl", "--include", "--no-buffer", "--output", "-", "--max-time", "3",
        "--header", "Connection: Upgrade",
        "--header", "Upgrade: websocket",
        "--header", "Host: pbxvisor1.cloudpbx.pl",
        "--header", "Origin: https://pbxvisor1.cloudpbx.pl",
        "--header", f"Sec-WebSocket-Key: {DOC_KEY}",
        "--header", "Sec-WebSocket-Version: 13",
        url,
    ]
    # fmt: on
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    curl = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    assert curl.stdout is not None
    output = b""
    try:
        async with asyncio.timeout(4):
            # curl prints the 101 head only together with the first body bytes, so wait
            # for the server side of the connection instead of for curl's output.
            await wait_until(lambda: subscribers(server) > 0)
            [sent] = await publish(
                server, tenants.a_name, [Subscriber("MojaCentrala-101", DeviceState.RINGING)]
            )
            data = sent.data.encode()
            # FIN + text opcode, unmasked, 7-bit length, then the JSON itself.
            expected = bytes([0x81, len(data)]) + data
            while expected not in output:
                chunk = await curl.stdout.read(4096)
                assert chunk, output
                output += chunk
    finally:
        if curl.returncode is None:
            curl.terminate()
        await curl.wait()
    frame_start = output.index(b"\r\n\r\n") + 4
    assert output[frame_start:].startswith(expected)
    status_line, *lines = output[:frame_start].decode().strip().split("\r\n")
    assert status_line.startswith("HTTP/1.1 101")
    headers = {name.lower(): value for name, _, value in (h.partition(": ") for h in lines)}
    accept = base64.b64encode(hashlib.sha1((DOC_KEY + WS_GUID).encode()).digest()).decode()
    assert headers["sec-websocket-accept"] == accept
    assert headers["upgrade"].lower() == "websocket"
    assert b'"channel":"pbx_MojaCentrala"' in output


async def test_raw_handshake_refusal_is_a_plain_http_answer(live) -> None:
    server, tenants = live
    async with raw_ws(server, f"/ws/pbx_{tenants.a_name}?pbxkey=nope-nope-nope") as (
        reader,
        _writer,
        head,
    ):
        assert head.startswith(b"HTTP/1.1 401")
        body = await asyncio.wait_for(reader.read(), 2)
    assert orjson.loads(body)["code"] == "invalid_key"


# ---------------------------------------------------------------------- pings


async def test_server_pings_and_a_ponging_client_stays(pinging) -> None:
    server, tenants = pinging
    async with raw_ws(server, a_path(tenants)) as (reader, writer, head):
        assert head.startswith(b"HTTP/1.1 101")
        pings = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.2  # three ping timeouts
        while loop.time() < deadline:
            opcode, payload = await read_frame(reader, 1)
            assert opcode == 0x9, f"expected a ping, got opcode {opcode:#x}"
            pings += 1
            writer.write(client_frame(0xA, payload))  # pong
        assert pings >= 3
        [sent] = await publish(server, tenants.a_name, [ext(7)])
        while True:  # still open: the event comes (pings may come first)
            opcode, payload = await read_frame(reader, 1)
            if opcode == 0x9:
                writer.write(client_frame(0xA, payload))
                continue
            assert opcode == 0x1
            assert payload == sent.data.encode()
            break


async def test_a_client_that_never_pongs_is_closed(pinging) -> None:
    server, tenants = pinging
    async with raw_ws(server, a_path(tenants)) as (reader, _writer, _head):
        opcode, _ = await read_frame(reader, 1)
        assert opcode == 0x9
        opcode, payload = await read_frame(reader, 1.5)  # no pong: close after the timeout
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1011


async def test_websockets_client_answers_server_pings(pinging) -> None:
    server, tenants = pinging
    async with ws_connect(server, a_path(tenants), ping_interval=None) as ws:
        await asyncio.sleep(1.0)  # several ping intervals and timeouts
        [sent] = await publish(server, tenants.a_name, [ext(1)])
        assert (await recv_json(ws))["id"] == sent.id
        assert ws.state.name == "OPEN"


async def test_server_shutdown_closes_clients_with_1012(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        ws = await ws_connect(server, a_path(tenants))
        stop = asyncio.create_task(server.stop())
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 3)
        await stop
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        await ws.close()
        server.server.should_exit = True


# ------------------------------------------------------------- frames, framed once


async def test_one_framing_per_message_whatever_the_number_of_clients(live) -> None:
    server, tenants = live
    clients = [await ws_connect(server, a_path(tenants)).__aenter__() for _ in range(5)]
    try:
        await wait_until(lambda: subscribers(server) == 5)
        before = server.runtime.bus.framed
        sent = await publish(server, tenants.a_name, [ext(1), ext(2), ext(3)])
        for ws in clients:
            assert await recv_ids(ws, 3) == [m.id for m in sent]
        assert server.runtime.bus.framed - before == 3  # not 15
    finally:
        for ws in clients:
            await ws.close()


async def test_a_client_ping_is_answered_with_its_payload(live) -> None:
    server, tenants = live
    async with raw_ws(server, a_path(tenants)) as (reader, writer, head):
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(client_frame(0x9, b"hello"))
        opcode, payload = await read_frame(reader)
        while opcode == 0x9:  # a keep-alive ping of ours may come first
            opcode, payload = await read_frame(reader)
        assert (opcode, payload) == (0xA, b"hello")


async def test_a_client_close_is_echoed(live) -> None:
    server, tenants = live
    async with raw_ws(server, a_path(tenants)) as (reader, writer, head):
        assert head.startswith(b"HTTP/1.1 101")
        await wait_until(lambda: subscribers(server) == 1)
        writer.write(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
        opcode, payload = await read_frame(reader)
        assert (opcode, payload) == (0x8, struct.pack("!H", 1000))
        assert await asyncio.wait_for(reader.read(), 2) == b""  # and the server hangs up
        await wait_until(lambda: subscribers(server) == 0)


async def test_an_unmasked_client_frame_is_closed_with_1002(live) -> None:
    server, tenants = live
    async with raw_ws(server, a_path(tenants)) as (reader, writer, head):
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(b"\x81\x02hi")  # a text frame without a mask
        opcode, payload = await read_frame(reader)
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1002
        await wait_until(lambda: subscribers(server) == 0)


async def test_client_frames_split_across_reads_are_reassembled(live) -> None:
    server, tenants = live
    async with raw_ws(server, a_path(tenants)) as (reader, writer, head):
        assert head.startswith(b"HTTP/1.1 101")
        text = client_frame(0x1, b"ignored")
        ping = client_frame(0x9, b"abc")
        data = text + ping
        for byte in range(len(data)):  # one byte at a time
            writer.write(data[byte : byte + 1])
            await writer.drain()
            await asyncio.sleep(0)
        opcode, payload = await read_frame(reader)
        while opcode == 0x9:
            opcode, payload = await read_frame(reader)
        assert (opcode, payload) == (0xA, b"abc")
