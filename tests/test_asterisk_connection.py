"""The AMI connection against the fake AMI server over loopback (tests/fakes/ami_server.py).

Login (with the event filter) and a refused login, per-action timeouts, list actions, a
silent peer found by Ping, reconnecting with backoff, clean shutdown.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cloudpbx.adapters.asterisk.connection import (
    AmiActionError,
    AmiAuthError,
    AmiConnection,
    AmiConnectionError,
    AmiSession,
    AmiTimeout,
    ConnectionOptions,
)
from cloudpbx.adapters.asterisk.framing import AmiMessage
from tests.asterisk_helpers import until
from tests.fakes.ami_server import FakeAmi

FAST = ConnectionOptions(
    connect_timeout=1.0,
    action_timeout=1.0,
    ping_interval=0.1,
    ping_timeout=0.2,
    reconnect_min=0.05,
    reconnect_max=0.4,
    auth_retry=0.3,
    jitter=0.0,
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    server = await FakeAmi().start()
    try:
        yield server
    finally:
        await server.close()


def connection(
    fake: FakeAmi, *, secret: str = "apisecret", options: ConnectionOptions = FAST, **hooks: Any
) -> AmiConnection:
    return AmiConnection(
        "127.0.0.1", fake.port, "api", secret, name="test", options=options, **hooks
    )


# -- one session --------------------------------------------------------------------------


async def test_session_logs_in_with_the_event_filter_and_lists(fake: FakeAmi) -> None:
    events: list[AmiMessage] = []
    session = await AmiSession.open("127.0.0.1", fake.port, on_messages=events.extend)
    assert session.banner == "Asterisk Call Manager/11.0.0"
    await session.login("api", "apisecret", events="system,call,agent,cdr")
    assert fake.logins == [("system,call,agent,cdr", True)]
    listing = await session.list_action("ExtensionStateList")
    assert [m.value("Exten") for m in listing.events] == ["104", "105", "101", "102", "103"]
    assert listing.complete is not None and listing.complete.value("ListItems") == "5"
    # The listing's events were handed over too, in wire order, before the action returned;
    # the fake's TestEvent (class reporting) was filtered by Asterisk's (the fake's) filter.
    names = [m.event for m in events]
    assert names[0] == "FullyBooted" and "TestEvent" not in names
    assert names[1:] == ["ExtensionStatus"] * 5 + ["ExtensionStateListComplete"]
    with pytest.raises(AmiActionError, match="No active conferences"):
        await session.list_action("ConfbridgeListRooms")
    await session.ping()
    await session.close()
    assert session.closed
    assert fake.sent("Logoff")


async def test_session_with_events_on_sees_the_noise(fake: FakeAmi) -> None:
    events: list[AmiMessage] = []
    session = await AmiSession.open("127.0.0.1", fake.port, on_messages=events.extend)
    await session.login("api", "apisecret", events="on")
    await until(lambda: len(events) == 2)
    assert [m.event for m in events] == ["FullyBooted", "TestEvent"]
    await session.close()


async def test_wrong_secret_is_an_auth_error(fake: FakeAmi) -> None:
    session = await AmiSession.open("127.0.0.1", fake.port)
    with pytest.raises(AmiAuthError, match="refused: Authentication failed"):
        await session.login("api", "wrong")
    await session.abort()


async def test_action_timeout_leaves_the_session_usable(fake: FakeAmi) -> None:
    fake.ignore.add("CoreStatus")
    session = await AmiSession.open("127.0.0.1", fake.port)
    await session.login("api", "apisecret")
    started = asyncio.get_running_loop().time()
    with pytest.raises(AmiTimeout, match=r"CoreStatus: no answer within 0\.2 s"):
        await session.action("CoreStatus", wait=0.2)
    assert asyncio.get_running_loop().time() - started < 1.0
    await session.ping(wait=1.0)  # still fine
    await session.close()


async def test_not_an_ami_port_and_no_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(AmiConnectionError, match=r"no AMI banner within 0\.2 s"):
        await AmiSession.open("127.0.0.1", port, wait=0.2)
    server.close()
    await server.wait_closed()
    with pytest.raises(AmiConnectionError, match=f"127.0.0.1:{port}"):
        await AmiSession.open("127.0.0.1", port, wait=0.5)


async def test_pending_actions_fail_when_the_peer_goes_away(fake: FakeAmi) -> None:
    fake.ignore.add("CoreStatus")
    session = await AmiSession.open("127.0.0.1", fake.port)
    await session.login("api", "apisecret")
    pending = asyncio.ensure_future(session.action("CoreStatus", wait=5.0))
    await asyncio.sleep(0.05)
    fake.drop()
    with pytest.raises(AmiConnectionError, match="lost"):
        await pending
    assert "closed by Asterisk" in await session.wait_closed() or session.closed
    with pytest.raises(AmiConnectionError):
        await session.ping()
    await session.abort()


# -- the kept connection ------------------------------------------------------------------


async def test_connects_logs_in_and_reports_health(fake: FakeAmi) -> None:
    connected: list[AmiSession] = []

    async def on_connect(session: AmiSession) -> None:
        connected.append(session)

    conn = connection(fake, on_connect=on_connect)
    assert conn.health()["state"] == "idle"
    conn.start()
    assert await conn.wait_connected(2.0)
    health = conn.health()
    assert health["state"] == "connected" and health["error"] is None
    assert health["address"] == f"127.0.0.1:{fake.port}" and health["connects"] == 1
    assert fake.logins == [("system,call,agent,cdr", True)]
    assert len(connected) == 1
    reply = await conn.action("Ping")
    assert reply.value("Ping") == "Pong"
    await conn.stop()
    assert conn.health()["state"] == "stopped"


async def test_wrong_secret_gives_a_clear_error_and_slow_retries(
    fake: FakeAmi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "cloudpbx.adapters.asterisk")
    conn = connection(fake, secret="wrong")
    conn.start()
    await until(lambda: conn.state == "auth_failed")
    health = conn.health()
    assert health["state"] == "auth_failed"
    assert "Authentication failed" in health["error"] and "'api'" in health["error"]
    assert "check the secret" in health["error"]
    with pytest.raises(AmiConnectionError, match="not connected"):
        await conn.action("Ping")
    await asyncio.sleep(0.5)
    # Retried every auth_retry (0.3 s), not in a tight loop, and logged once, not each time.
    assert 1 <= len(fake.logins) <= 3
    assert all(not ok for _, ok in fake.logins)
    errors = [r for r in caplog.records if "Authentication failed" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR
    # The operator fixes the secret on the Asterisk side: the next retry gets in.
    fake.secret = "wrong"
    await until(lambda: conn.state == "connected", 2.0)
    await conn.stop()


async def test_refused_login_can_be_final(fake: FakeAmi) -> None:
    options = ConnectionOptions(
        connect_timeout=1.0, ping_interval=0.1, ping_timeout=0.2, auth_retry=0, jitter=0.0
    )
    conn = connection(fake, secret="wrong", options=options)
    conn.start()
    await until(lambda: conn.state == "auth_failed")
    await asyncio.sleep(0.3)
    assert len(fake.logins) == 1
    assert conn.health()["state"] == "auth_failed"
    await conn.stop()


async def test_asterisk_shutting_down_is_no_auth_failure(fake: FakeAmi) -> None:
    """Seen in the lab: during a restart, Login answers `Asterisk is shutting down`."""
    fake.login_error = "Asterisk is shutting down"
    conn = connection(fake)
    conn.start()
    await until(lambda: len(fake.logins) >= 3)  # backoff (0.05, 0.1 s), not auth_retry
    assert conn.state != "auth_failed" and "shutting down" in (conn.error or "")
    fake.login_error = None
    await until(lambda: conn.state == "connected")
    await conn.stop()


async def test_silent_peer_is_detected_by_ping_and_replaced(fake: FakeAmi) -> None:
    disconnects: list[str] = []
    conn = connection(fake, on_disconnect=disconnects.append)
    conn.start()
    assert await conn.wait_connected(2.0)
    fake.silent = True  # the TCP connection stays up; nothing answers any more
    await until(lambda: bool(disconnects), 2.0)
    assert "no answer to Ping within 0.2 s" in disconnects[0]
    fake.silent = False
    await until(lambda: conn.state == "connected" and conn.connects == 2, 2.0)
    assert len(fake.logins) >= 2
    await conn.stop()


async def test_reconnects_with_backoff_while_asterisk_is_down(
    fake: FakeAmi, monkeypatch: pytest.MonkeyPatch
) -> None:
    resyncs: list[float] = []

    async def on_connect(session: AmiSession) -> None:
        resyncs.append(asyncio.get_running_loop().time())

    attempts: list[float] = []
    real_open = AmiSession.open

    async def counting_open(*args: object, **kwargs: object) -> AmiSession:
        attempts.append(asyncio.get_running_loop().time())
        return await real_open(*args, **kwargs)  # type: ignore[arg-type]

    conn = connection(fake, on_connect=on_connect)
    conn.start()
    assert await conn.wait_connected(2.0)
    port = fake.port
    monkeypatch.setattr(AmiSession, "open", counting_open)
    try:
        await fake.stop_listening()
        await until(lambda: len(attempts) >= 5, 3.0)
        assert conn.health()["state"] in ("disconnected", "connecting")
        assert "Connect call failed" in (conn.error or "") or "refused" in (conn.error or "")
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        # 0.05, 0.1, 0.2, 0.4, 0.4 (capped): doubling, never past reconnect_max.
        assert gaps[1] > gaps[0] * 1.5 and gaps[2] > gaps[1] * 1.5
        assert max(gaps) < 0.4 + 0.2
        fake.port = port
        await fake.start()
        await until(lambda: len(resyncs) == 2, 3.0)
        assert conn.state == "connected" and conn.connects == 2
    finally:
        await conn.stop()


async def test_stop_logs_off_and_leaves_no_task(fake: FakeAmi) -> None:
    before = asyncio.all_tasks()
    conn = connection(fake)
    conn.start()
    assert await conn.wait_connected(2.0)
    started = asyncio.get_running_loop().time()
    await conn.stop()
    assert asyncio.get_running_loop().time() - started < 0.5
    assert fake.sent("Logoff")
    await until(lambda: all(s.closed for s in fake.sessions), 1.0)
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    leftover.discard(asyncio.current_task())  # type: ignore[arg-type]
    assert not [t.get_name() for t in leftover if t.get_name().startswith("test-")]
    await conn.stop()  # idempotent


async def test_stop_while_asterisk_is_unreachable_is_quick() -> None:
    conn = AmiConnection(
        "127.0.0.1", 1, "api", "x", name="test", options=FAST, rng=random.Random(1)
    )
    conn.start()
    await asyncio.sleep(0.2)
    assert conn.state in ("disconnected", "connecting")
    async with asyncio.timeout(1.0):
        await conn.stop()
    assert conn.state == "stopped"


async def test_stop_during_the_resync(fake: FakeAmi) -> None:
    fake.ignore.add("CoreShowChannels")

    async def on_connect(session: AmiSession) -> None:
        await session.list_action("CoreShowChannels", wait=30)

    conn = connection(fake, on_connect=on_connect)
    conn.start()
    await until(lambda: bool(fake.sent("CoreShowChannels")))
    async with asyncio.timeout(1.0):
        await conn.stop()
    assert conn.state == "stopped"
