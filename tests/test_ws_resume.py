"""Resume after a disconnect, slow clients, restarts: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from cloudpbx.domain.events import ConferenceMember
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running, start_server
from tests.test_ws import (
    a_path,
    ext,
    publish,
    publish_ext,
    recv_ids,
    recv_json,
    subscribers,
    wait_until,
    ws_connect,
)


def resume_header(ws: ClientConnection) -> str | None:
    assert ws.response is not None
    value: str | None = ws.response.headers.get("x-resume")
    return value


async def assert_quiet(ws: ClientConnection, seconds: float = 0.1) -> None:
    """Nothing more arrives (no duplicate, no stray message)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), seconds)


@pytest.fixture(scope="module")
async def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[LiveServer, Tenants]]:
    tenants = Tenants()
    settings = make_settings(tmp_path_factory.mktemp("resume"))
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        yield server, tenants


# ------------------------------------------------------------------------ resume


@pytest.mark.parametrize("how", ["query", "header"])
async def test_resume_gets_exactly_the_missed_messages_then_live(live, how: str) -> None:
    server, tenants = live
    async with ws_connect(server, a_path(tenants)) as ws:
        assert resume_header(ws) is None  # no resume asked, none answered
        first = await publish_ext(server, tenants.a_name, 5)
        assert await recv_ids(ws, 5) == first
    missed = await publish_ext(server, tenants.a_name, 7)
    last = first[-1]
    if how == "query":
        connection = ws_connect(server, a_path(tenants, f"last_event_id={last}"))
    else:
        connection = ws_connect(
            server, a_path(tenants), additional_headers={"Last-Event-ID": str(last)}
        )
    async with connection as ws:
        assert resume_header(ws) == "complete"
        assert await recv_ids(ws, 7) == missed
        live_ids = await publish_ext(server, tenants.a_name, 3)
        assert await recv_ids(ws, 3) == live_ids
        await assert_quiet(ws)


async def test_resume_with_the_newest_id_gets_only_live_messages(live) -> None:
    server, tenants = live
    [newest] = await publish_ext(server, tenants.a_name, 1)
    async with ws_connect(server, a_path(tenants, f"last_event_id={newest}")) as ws:
        assert resume_header(ws) == "complete"
        await assert_quiet(ws, 0.05)
        later = await publish_ext(server, tenants.a_name, 2)
        assert await recv_ids(ws, 2) == later


async def test_query_wins_over_header(live) -> None:
    server, tenants = live
    ids = await publish_ext(server, tenants.a_name, 3)
    async with ws_connect(
        server,
        a_path(tenants, f"last_event_id={ids[1]}"),
        additional_headers={"Last-Event-ID": str(ids[0])},
    ) as ws:
        assert await recv_ids(ws, 1) == [ids[2]]
        await assert_quiet(ws, 0.05)


async def test_an_id_from_the_future_does_not_silence_the_stream(live) -> None:
    server, tenants = live
    await publish_ext(server, tenants.a_name, 1)
    async with ws_connect(server, a_path(tenants, "last_event_id=999999999999")) as ws:
        assert resume_header(ws) == "complete"
        later = await publish_ext(server, tenants.a_name, 2)
        assert await recv_ids(ws, 2) == later


async def test_resume_while_publishing_loses_nothing_and_repeats_nothing(live) -> None:
    """A publisher runs flat out while a client keeps disconnecting and resuming: the ids
    it sees, across all its connections, are exactly the ids published, in order."""
    server, tenants = live
    published: list[int] = []
    stop = asyncio.Event()

    async def publisher() -> None:
        # Bursts of a few messages, as fast as the loop allows between them, but well
        # within the history and the per-connection buffer (those limits are tested apart).
        n = 0
        while not stop.is_set():
            published.extend(await publish_ext(server, tenants.a_name, 1 + n % 4))
            n += 1
            await asyncio.sleep(0 if n % 2 else 0.002)

    [start] = await publish_ext(server, tenants.a_name, 1)
    seen: list[int] = []
    task = asyncio.create_task(publisher())
    try:
        for round_ in range(30):
            last = seen[-1] if seen else start
            query = f"last_event_id={last}"
            headers = {"Last-Event-ID": str(last)} if round_ % 2 else {}
            # max_queue=None: the client leaves with unread messages; with flow control on,
            # websockets stops reading and only sees the server's close after close_timeout.
            async with ws_connect(
                server,
                a_path(tenants, "" if headers else query),
                additional_headers=headers,
                max_queue=None,
            ) as ws:
                assert resume_header(ws) == "complete"
                for _ in range(1 + round_ % 7):
                    seen.append((await recv_json(ws))["id"])
    finally:
        stop.set()
        await task
    final = published[-1]
    async with ws_connect(server, a_path(tenants, f"last_event_id={seen[-1]}")) as ws:
        while seen[-1] < final:
            seen.append((await recv_json(ws))["id"])
    assert len(published) < 5_000, "the publisher outran the history: slow it down"
    assert seen == published[: len(seen)]
    assert seen[-1] == final
    assert len(set(seen)) == len(seen)


async def test_two_clients_resuming_at_different_points(live) -> None:
    server, tenants = live
    ids = await publish_ext(server, tenants.a_name, 10)
    async with (
        ws_connect(server, a_path(tenants, f"last_event_id={ids[2]}")) as early,
        ws_connect(server, a_path(tenants, f"last_event_id={ids[7]}")) as late,
    ):
        more = await publish_ext(server, tenants.a_name, 2)
        assert await recv_ids(early, 9) == ids[3:] + more
        assert await recv_ids(late, 4) == ids[8:] + more


# ----------------------------------------------------------- history shorter than N


async def test_too_old_id_gets_what_is_kept_and_partial(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_history_size=5)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        ids = await publish_ext(server, tenants.a_name, 12)
        kept = ids[-5:]
        async with ws_connect(server, a_path(tenants, f"last_event_id={ids[1]}")) as ws:
            assert resume_header(ws) == "partial"
            assert await recv_ids(ws, 5) == kept
            await assert_quiet(ws, 0.05)
        async with ws_connect(server, a_path(tenants, "last_event_id=0")) as ws:
            assert resume_header(ws) == "partial"
            assert await recv_ids(ws, 5) == kept
        # The message just before the oldest kept one: nothing lost.
        async with ws_connect(server, a_path(tenants, f"last_event_id={ids[-6]}")) as ws:
            assert resume_header(ws) == "complete"
            assert await recv_ids(ws, 5) == kept
        async with ws_connect(server, a_path(tenants, f"last_event_id={ids[-6] - 1}")) as ws:
            assert resume_header(ws) == "partial"
            assert await recv_ids(ws, 5) == kept
            more = await publish_ext(server, tenants.a_name, 2)
            assert await recv_ids(ws, 2) == more
        # The persisted history is pruned too: a restart keeps what memory kept.
        await server.runtime.hub.flush()
    async with (
        running(settings) as server,
        ws_connect(server, a_path(tenants, "last_event_id=0")) as ws,
    ):
        assert resume_header(ws) == "partial"
        assert await recv_ids(ws, 5) == (kept + more)[-5:]


# --------------------------------------------------------------------- slow client


def small_socket() -> socket.socket:
    """A connected-later client socket with a tiny receive buffer (a slow reader)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def test_a_slow_client_is_cut_off_and_the_others_do_not_wait(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_buffer_size=20)
    count = 2_000
    # ~4 kB messages: 8 MB in all, more than the kernel buffers of a loopback socket hold
    # (a few MB), so the slow client really falls behind.
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        sock = small_socket()
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        slow_cm = ws_connect(server, a_path(tenants), sock=sock, max_queue=1, compression=None)
        fast_cm = ws_connect(server, a_path(tenants), max_queue=None)
        async with slow_cm as slow, fast_cm as fast:
            await wait_until(lambda: subscribers(server) == 2)
            received: list[int] = []

            async def read_fast() -> None:
                while len(received) < count:
                    received.append((await recv_json(fast))["id"])

            reader = asyncio.create_task(read_fast())
            published: list[int] = []
            cut_off_at: int | None = None
            for n in range(count):
                event = ConferenceMember(f"SIP/x-{n}", "add", "Sala", "x" * 4_000, str(n))
                published += [m.id for m in await publish(server, tenants.a_name, [event])]
                if cut_off_at is None and subscribers(server) == 1:
                    cut_off_at = n
                await asyncio.sleep(0)  # events arrive one at a time, as from a PBX
            await asyncio.wait_for(reader, 10)
            assert received == published
            # The slow one was cut off while publishing went on, and the fast one got
            # everything published after that too: nobody waited for the slow one.
            assert cut_off_at is not None and cut_off_at < count - 1

            # The slow client now reads what reached it, then the close frame.
            got: list[int] = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    got.append((await recv_json(slow, 3))["id"])
            close = info.value.rcvd
            assert close is not None and close.code == 4008
            assert "last_event_id=" in close.reason
            resume_from = int(close.reason.rsplit("last_event_id=", 1)[1])
            assert got == published[: len(got)]
            assert len(got) < count
            assert resume_from == got[-1]

        async with ws_connect(server, a_path(tenants, f"last_event_id={resume_from}")) as again:
            assert resume_header(again) == "complete"
            rest = await recv_ids(again, count - len(got))
        assert got + rest == published


async def test_a_client_that_reads_late_still_gets_a_consistent_close(tmp_path: Path) -> None:
    """Overflow while the server's send is blocked on a full socket: the 4008 reason
    names exactly the last message the client receives before the close frame."""
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_buffer_size=5)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        sock = small_socket()
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        async with ws_connect(
            server, a_path(tenants), sock=sock, max_queue=1, compression=None
        ) as slow:
            await wait_until(lambda: subscribers(server) == 1)
            published: list[int] = []
            # One at a time with a yield in between: the sender keeps up until the socket
            # is full (6 MB: more than the kernel buffers hold), then blocks, then overflows.
            for n in range(600):
                event = ConferenceMember(f"SIP/x-{n}", "add", "Sala", "y" * 10_000, str(n))
                published += [m.id for m in await publish(server, tenants.a_name, [event])]
                await asyncio.sleep(0)
            await wait_until(lambda: subscribers(server) == 0)
            # The client only starts reading a while later: the close frame still waits
            # for it (up to ws_ping_timeout) instead of being dropped, which would leave
            # the client with a bare disconnect and no id to resume from.
            await asyncio.sleep(2.5)
            got: list[int] = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    got.append((await recv_json(slow, 3))["id"])
        assert info.value.rcvd is not None and info.value.rcvd.code == 4008
        assert info.value.rcvd.reason == f"too slow; resume with last_event_id={got[-1]}"
        assert got == published[: len(got)]


# ------------------------------------------------------------------------ restarts


async def test_ids_continue_and_history_survives_a_clean_restart(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path)
    async with (
        running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server,
        ws_connect(server, a_path(tenants)) as ws,
    ):
        before = await publish_ext(server, tenants.a_name, 5)
        assert await recv_ids(ws, 5) == before
    async with running(settings) as server:
        after = await publish_ext(server, tenants.a_name, 3)
        # A clean stop gives the unused reserved ids back: no gap.
        assert after[0] == before[-1] + 1
        async with ws_connect(server, a_path(tenants, f"last_event_id={before[1]}")) as ws:
            assert resume_header(ws) == "complete"
            assert await recv_ids(ws, 6) == before[2:] + after
            live_ids = await publish_ext(server, tenants.a_name, 1)
            assert await recv_ids(ws, 1) == live_ids


async def test_ids_never_repeat_after_a_crash(tmp_path: Path) -> None:
    """A second server over the same database while the first never closed its hub
    (what a crash leaves behind): its ids start after everything the first reserved."""
    tenants = Tenants()
    settings = make_settings(tmp_path)
    all_ids: list[int] = []
    first = await start_server(settings, prepare=lambda rt: create_tenants(rt, tenants))
    second: LiveServer | None = None
    try:
        before = await publish_ext(first, tenants.a_name, 5)
        await first.runtime.hub.flush()  # these reached the database before the "crash"
        all_ids += before
        second = await start_server(settings)
        after = await publish_ext(second, tenants.a_name, 3)
        all_ids += after
        assert after[0] > before[-1]
        async with ws_connect(second, a_path(tenants, "last_event_id=0")) as ws:
            assert await recv_ids(ws, 8) == before + after
        async with ws_connect(second, a_path(tenants, f"last_event_id={before[-1]}")) as ws:
            # Stored before sent: whatever the first process sent, the second knows.
            assert resume_header(ws) == "complete"
            assert await recv_ids(ws, 3) == after
        async with ws_connect(second, a_path(tenants, f"last_event_id={after[0]}")) as ws:
            assert resume_header(ws) == "complete"  # after the crash point: all known
            assert await recv_ids(ws, 2) == after[1:]
    finally:
        if second is not None:
            await second.stop()
        await first.stop()  # the "crashed" hub's late close must not give ids back
    async with running(settings) as third:
        later = await publish_ext(third, tenants.a_name, 2)
    all_ids += later
    assert later[0] > max(before + after)
    assert len(set(all_ids)) == len(all_ids)
    assert all_ids == sorted(all_ids)


async def test_a_message_a_crash_kept_from_the_database_was_never_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path)
    first = await start_server(settings, prepare=lambda rt: create_tenants(rt, tenants))
    try:
        hub = first.runtime.hub
        tenant = await first.runtime.tenants.require(tenants.a_name)
        kept = await publish_ext(first, tenants.a_name, 2)
        await hub.flush()
        # Make the write-behind fail from now on, as if the process died before it ran.

        async def refuse(_batch: Any) -> None:
            raise OSError("simulated crash: the database is gone")

        monkeypatch.setattr(hub._store, "append", refuse)
        async with ws_connect(first, a_path(tenants, f"last_event_id={kept[-1]}")) as watcher:
            lost = [m.id for m in await hub.publish(tenant, [ext(1)])]
            await hub.flush()
            await assert_quiet(watcher, 0.2)  # not stored, so not sent to anyone
        async with running(settings) as second:
            after = await publish_ext(second, tenants.a_name, 1)
            assert after[0] > lost[-1]
            async with ws_connect(second, a_path(tenants, "last_event_id=0")) as ws:
                assert await recv_ids(ws, 3) == kept + after
            # A client of the crashed process resumes from the last id it saw: complete.
            async with ws_connect(second, a_path(tenants, f"last_event_id={kept[-1]}")) as ws:
                assert resume_header(ws) == "complete"
                assert await recv_ids(ws, 1) == after
                await assert_quiet(ws, 0.05)
                more = await publish_ext(second, tenants.a_name, 1)
                assert await recv_ids(ws, 1) == more
    finally:
        with contextlib.suppress(Exception):
            await first.stop()


async def test_replay_after_a_restart_is_byte_identical(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        sent: list[str] = []
        for n in range(4):
            event = ConferenceMember(f"SIP/{n}", "add", "Sala", "Zażółć gęślą jaźń", str(n))
            sent += [m.data for m in await publish(server, tenants.a_name, [event])]
    async with (
        running(settings) as server,
        ws_connect(server, a_path(tenants, "last_event_id=0")) as ws,
    ):
        received = [await asyncio.wait_for(ws.recv(), 2) for _ in range(4)]
    assert received == sent
    assert orjson.loads(received[0])["text"]["cmember"]["callerIDName"] == "Zażółć gęślą jaźń"


async def test_a_backlog_larger_than_the_write_limit_is_paced_not_cut_off(tmp_path: Path) -> None:
    """A resume writes its backlog at the pace the client reads it (flow control), while
    live messages published meanwhile wait and follow it: nothing lost, nothing twice."""
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_buffer_size=50)  # 50 KiB write limit
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        backlog: list[int] = []
        # ~24 MB: far more than the limit and the socket buffers; each message bigger than
        # what the kernel takes at once, so every write leaves the transport over the limit.
        for n in range(12):
            event = ConferenceMember(f"SIP/x-{n}", "add", "Sala", "z" * 2_000_000, str(n))
            backlog += [m.id for m in await publish(server, tenants.a_name, [event])]
        resume = a_path(tenants, f"last_event_id={backlog[0] - 1}")
        async with ws_connect(server, resume, max_size=None, max_queue=1) as ws:
            assert resume_header(ws) == "complete"
            live_ids = await publish_ext(server, tenants.a_name, 10)  # while it reads
            got: list[int] = []
            while len(got) < len(backlog) + len(live_ids):
                got.append((await recv_json(ws, 5))["id"])
                await asyncio.sleep(0.1)  # a slow reader: ~20 MB/s
            assert server.runtime.bus.subscriber_count(f"pbx_{tenants.a_name}") == 1  # live
            [later] = await publish_ext(server, tenants.a_name, 1)
            assert (await recv_json(ws))["id"] == later
        assert got == backlog + live_ids
