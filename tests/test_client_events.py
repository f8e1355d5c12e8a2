"""The event stream against the real server: typed events, resume across dropped
connections (a 4008 close and a server restart) with nothing lost or repeated."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import uvicorn

from cloudpbx.client import (
    AsyncClient,
    AuthError,
    Client,
    ConferenceMemberEvent,
    DeviceState,
    Event,
    ExtStatusEvent,
    Forbidden,
    MemberStatus,
    QueueEvent,
    QueueMemberEvent,
    RetryPolicy,
    SmsStatus,
    SmsStatusEvent,
    SubscriberEvent,
    UnknownEvent,
)
from cloudpbx.domain import events as domain
from cloudpbx.domain.states import DeviceState as ServerDeviceState
from cloudpbx.domain.states import MemberStatus as ServerMemberStatus
from cloudpbx.domain.states import SmsStatus as ServerSmsStatus
from cloudpbx.runtime import build_runtime
from cloudpbx.server import uvicorn_config
from cloudpbx.settings import Settings
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running

Live = tuple[LiveServer, Tenants]
QUICK = RetryPolicy(attempts=None, initial=0.05, maximum=0.2, jitter=0.0)
TIMEOUT = 15.0


@dataclass(frozen=True)
class ParkedCall:
    """An event type this client has never heard of."""

    event_type: ClassVar[str] = "parkedcall"

    def payload(self) -> dict[str, Any]:
        return {"slot": "701", "peer": "MojaCentrala-101"}


@dataclass(frozen=True)
class SubscriberWithMore:
    """A subscriber event from a newer server, with a field the contract lacks."""

    event_type: ClassVar[str] = "subscriber"

    def payload(self) -> dict[str, Any]:
        return {"peer": "MojaCentrala-102", "statusValue": 8, "callUid": "1772539200.9"}


def queue_calls(start: int, count: int, pad: int = 0) -> list[domain.Event]:
    """`count` events of one type: the server sends each as its own message (with a
    queue name `pad` characters longer, to make them big)."""
    return [domain.QueueCalls("Kolejka1" + "x" * pad, n) for n in range(start, start + count)]


async def publish(server: LiveServer, pbx: str, batch: list[domain.Event]) -> list[int]:
    """Publish and wait for the group commit (stored, in the history, sent)."""
    tenant = await server.runtime.tenants.require(pbx)
    ids = [message.id for message in await server.runtime.hub.publish(tenant, batch)]
    await server.runtime.hub.flush()
    return ids


async def wait_for_subscriber(server: LiveServer, pbx: str, count: int = 1) -> None:
    for _ in range(500):
        if server.runtime.bus.subscriber_count(f"pbx_{pbx}") >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the client never subscribed")


async def collect(stream: AsyncIterator[tuple[int, Event]], count: int) -> list[tuple[int, Event]]:
    got: list[tuple[int, Event]] = []
    async for item in stream:
        got.append(item)
        if len(got) == count:
            break
    return got


async def test_every_event_type_typed(live: Live) -> None:
    server, tenants = live
    pbx = tenants.a_name
    ids = await publish(
        server,
        pbx,
        [
            domain.Subscriber(f"{pbx}-101", ServerDeviceState.RINGING, "600100200", "Jan"),
            domain.ExtStatus("130", ServerDeviceState.UNAVAILABLE),
            domain.QueueCalls("Kolejka1", 2),
            domain.QueueMember(
                f"{pbx}-101",
                "Kolejka1",
                ServerMemberStatus.IDLE,
                3,
                False,
                True,
                "Agent 1",
                f"SIP/{pbx}-101",
                reason="lunch",
            ),
            domain.ConferenceMember(f"SIP/{pbx}-104-0005f005", "add", "SesjaRady", "Ola", "104"),
            domain.SmsSendResponse("3292468348841377230", "48600100200", ServerSmsStatus.SENT),
            ParkedCall(),  # type: ignore[list-item]
            SubscriberWithMore(),  # type: ignore[list-item]
        ],
    )
    async with (
        AsyncClient(server.url, tenants.a_key, pbx=pbx) as client,
        client.events(last_event_id=0) as stream,
    ):
        got = await asyncio.wait_for(collect(stream, 8), TIMEOUT)
        assert stream.last_event_id == ids[-1]
    assert [event_id for event_id, _ in got] == ids  # one event per message, each its id
    events = [event for _, event in got]
    sub, ext, queue, member, conf, sms, parked, newer = events
    assert isinstance(sub, SubscriberEvent) and sub.state is DeviceState.RINGING
    assert (sub.extension, sub.connect_peer_number, sub.connect_peer_name) == (
        "101",
        "600100200",
        "Jan",
    )
    assert isinstance(ext, ExtStatusEvent) and ext.state is DeviceState.UNAVAILABLE
    assert ext.extension == "130"
    assert isinstance(queue, QueueEvent) and (queue.queue, queue.calls) == ("Kolejka1", 2)
    assert isinstance(member, QueueMemberEvent) and member.state is MemberStatus.IDLE
    assert (member.extension, member.calls_taken, member.paused, member.reason) == (
        "101",
        3,
        True,
        "lunch",
    )
    assert not member.dynamic and member.location == f"SIP/{pbx}-101"
    assert isinstance(conf, ConferenceMemberEvent) and conf.joined and conf.extension == "104"
    assert isinstance(sms, SmsStatusEvent) and sms.sms_status is SmsStatus.SENT
    assert not sms.is_final and sms.to == "48600100200"
    assert isinstance(parked, UnknownEvent) and parked.type == "parkedcall"
    assert parked.raw == {"slot": "701", "peer": "MojaCentrala-101"}
    assert isinstance(newer, SubscriberEvent) and newer.raw["callUid"] == "1772539200.9"
    assert newer.connect_peer_number is None and newer.state is DeviceState.RINGING


async def test_sms_statuses_arrive_live(live: Live) -> None:
    server, tenants = live
    async with (
        AsyncClient(server.url, tenants.a_key, pbx=tenants.a_name) as client,
        client.events() as stream,
    ):
        await wait_for_subscriber(server, tenants.a_name)
        answer = await client.send_sms("600100200", "Test", test=True)
        got = await asyncio.wait_for(collect(stream, 3), TIMEOUT)
    statuses = [(e.msg_id, e.status) for _, e in got if isinstance(e, SmsStatusEvent)]
    assert statuses == [(answer.response_id, s) for s in ("ACCEPTED", "SENT", "DELIVERED")]


async def test_resume_after_slow_client_close(tmp_path: Path) -> None:
    """The server drops a client whose unsent data passed 4 KiB (close 4008); the stream
    reconnects with `last_event_id` and gets the rest from the history."""
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_buffer_size=4)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        pbx = tenants.a_name
        async with (
            AsyncClient(server.url, tenants.a_key, pbx=pbx) as client,
            client.events(reconnect=QUICK) as stream,
        ):
            await wait_for_subscriber(server, pbx)
            # ~12 MB that nobody reads yet: more than loopback's socket buffers hold.
            first = await publish(server, pbx, queue_calls(0, 30, pad=400_000))
            assert server.runtime.bus.subscriber_count(f"pbx_{pbx}") == 0  # cut off
            consumer = asyncio.create_task(collect(stream, 60))
            await wait_for_subscriber(server, pbx)  # reconnected
            second = await publish(server, pbx, queue_calls(30, 30))
            got = await asyncio.wait_for(consumer, TIMEOUT)
            assert stream.reconnects >= 1
    assert [event_id for event_id, _ in got] == first + second
    assert [e.calls for _, e in got if isinstance(e, QueueEvent)] == list(range(60))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_on(settings: Settings, prepare: Any = None) -> AsyncIterator[LiveServer]:
    """Like tests.live.running, but on the port the settings name (to restart on it)."""
    runtime = build_runtime(settings)
    await runtime.migrate()
    if prepare is not None:
        await prepare(runtime)
    server = uvicorn.Server(uvicorn_config(runtime))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "server stopped during start"
        await asyncio.sleep(0.01)
    live = LiveServer(runtime, server, task, settings.port)
    try:
        yield live
    finally:
        await live.stop()


async def test_resume_across_server_restart(tmp_path: Path) -> None:
    """The sync stream survives a restart of the server (same data, same port): events
    published while it was down or reconnecting arrive once, in order."""
    tenants = Tenants()
    settings = make_settings(tmp_path, port=free_port())
    pbx = tenants.a_name
    got: list[tuple[int, Event]] = []
    async with serve_on(settings, lambda rt: create_tenants(rt, tenants)) as server:
        sdk = Client(server.url, tenants.a_key, pbx=pbx)
        stream = sdk.events(reconnect=QUICK)

        def consume() -> None:
            for item in stream:
                got.append(item)
                if len(got) == 40:
                    return

        consumer = asyncio.create_task(asyncio.to_thread(consume))
        await wait_for_subscriber(server, pbx)
        first = await publish(server, pbx, queue_calls(0, 20))
        for _ in range(500):
            if len(got) == 20:
                break
            await asyncio.sleep(0.01)
    async with serve_on(settings) as server:  # same database, same port, new process state
        second = await publish(server, pbx, queue_calls(20, 10))  # before the client is back
        await wait_for_subscriber(server, pbx)
        third = await publish(server, pbx, queue_calls(30, 10))
        try:
            await asyncio.wait_for(consumer, TIMEOUT)
        finally:  # the sync close waits for the server, which runs in this loop
            await asyncio.to_thread(stream.close)
            sdk.close()
    assert [event_id for event_id, _ in got] == first + second + third
    assert first[-1] < second[0]  # ids keep growing across the restart
    assert [e.calls for _, e in got if isinstance(e, QueueEvent)] == list(range(40))
    assert stream.reconnects >= 1


async def test_gap_is_reported(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_history_size=5)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        ids = await publish(server, tenants.a_name, queue_calls(0, 12))
        gaps: list[int | None] = []
        async with (
            AsyncClient(server.url, tenants.a_key, pbx=tenants.a_name) as client,
            client.events(last_event_id=ids[0], on_gap=gaps.append) as stream,
        ):
            got = await asyncio.wait_for(collect(stream, 5), TIMEOUT)
    assert gaps == [ids[0]] and [event_id for event_id, _ in got] == ids[-5:]


@pytest.mark.parametrize("case", ["revoked", "other_pbx", "unknown_pbx"])
async def test_refused_stream_raises_at_once(live: Live, case: str) -> None:
    server, tenants = live
    key, pbx, cls = {
        "revoked": (tenants.revoked_key, tenants.a_name, AuthError),
        "other_pbx": (tenants.b_key, tenants.a_name, Forbidden),
        "unknown_pbx": (tenants.a_key, "NieMaTakiej", Forbidden),
    }[case]
    async with AsyncClient(server.url, key) as client:
        with pytest.raises(cls) as caught:  # raised on connecting, never retried
            async with client.events(pbx, reconnect=QUICK):
                pass
    assert caught.value.request is not None and "pbxkey=***" in caught.value.request.url
    assert key not in str(caught.value)


async def test_a_fresh_stream_cut_by_a_restart_resumes_where_the_server_said(
    tmp_path: Path,
) -> None:
    """A stream that got no event yet has no id of its own: the server's 1012 close names
    one, so what is published while it reconnects is not missed."""
    tenants = Tenants()
    settings = make_settings(tmp_path, port=free_port())
    pbx = tenants.a_name
    got: list[tuple[int, Event]] = []
    async with serve_on(settings, lambda rt: create_tenants(rt, tenants)) as server:
        await publish(server, pbx, queue_calls(0, 3))  # before the stream: not for it
        await server.runtime.hub.flush()
        sdk = Client(server.url, tenants.a_key, pbx=pbx)
        stream = sdk.events(reconnect=QUICK)

        def consume() -> None:
            for item in stream:
                got.append(item)
                if len(got) == 5:
                    return

        consumer = asyncio.create_task(asyncio.to_thread(consume))
        await wait_for_subscriber(server, pbx)
    async with serve_on(settings) as server:
        missed = await publish(server, pbx, queue_calls(3, 5))  # before the client is back
        try:
            await asyncio.wait_for(consumer, TIMEOUT)
        finally:
            await asyncio.to_thread(stream.close)
            sdk.close()
    assert [event_id for event_id, _ in got] == missed
    assert stream.reconnects >= 1
