"""A real `cloudpbx serve` on a PostgreSQL of the test's own that is stopped and started
again while the simulator publishes: what clients, /healthz and REST see (docs/
operations.md, "Bad days"). The shared PostgreSQL is never touched (tests/private_pg.py).

(a) The default event path (the in-process hub stores first, then delivers).
(b) With the event engine (NATS JetStream): delivery does not need the database, the
    archive catches up after it returns.
Either way: the client's stream has no repeat and no reordering, any close names where
to resume and the resume is complete, every message a client saw is stored, REST answers
503 (never 500) while the database is down, /healthz says so and is ok again after.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cloudpbx.runtime import build_runtime
from tests.conftest import Tenants, create_tenants
from tests.engine_support import NATS_URL, own_stream
from tests.live import make_settings
from tests.private_pg import PrivatePostgres, private_postgres
from tests.processes import free_port, serve, stop, wait_healthy

DOWN_S = 3.0
"""How long the database stays down (long enough to see /healthz and REST say so)."""


@dataclass
class Reader:
    """A WebSocket client that keeps every message (with the loop time it came) and, when
    the server closes it, reconnects from its last id, as the SDK does."""

    url: str
    got: list[tuple[float, int, str]] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)
    resumes: list[str] = field(default_factory=list)

    @property
    def last_id(self) -> int:
        return self.got[-1][1] if self.got else 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            url = self.url if not self.got else f"{self.url}&last_event_id={self.last_id}"
            try:
                async with connect(url, proxy=None, open_timeout=10) as ws:
                    if self.got:
                        assert ws.response is not None
                        self.resumes.append(ws.response.headers.get("x-resume", "none"))
                    async for raw in ws:
                        assert isinstance(raw, str)
                        message_id = orjson.loads(raw)["id"]
                        assert message_id > self.last_id, f"{message_id} after {self.last_id}"
                        self.got.append((loop.time(), message_id, raw))
            except ConnectionClosed as closed:
                self.closes.append((closed.rcvd.code if closed.rcvd else 1006, str(closed)))
            except (OSError, TimeoutError) as exc:
                self.closes.append((0, repr(exc)))
            await asyncio.sleep(0.2)

    async def wait_for(self, count: int, beyond: int = 0, seconds: float = 30) -> None:
        for _ in range(int(seconds * 20)):
            if len([1 for _, i, _ in self.got if i > beyond]) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} messages after {beyond}: got {self.got[-3:]}")


@dataclass
class Server:
    pg: PrivatePostgres
    port: int
    tenants: Tenants
    database: str
    log: Path

    @property
    def ws_url(self) -> str:
        t = self.tenants
        return f"ws://127.0.0.1:{self.port}/ws/pbx_{t.a_name}?pbxkey={t.a_key}"

    async def rest_status(self) -> int:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as c:
            headers = {"Authorization": f"Bearer {self.tenants.a_key}"}
            params = {"datestart": "2020-01-01", "datestop": "2030-01-01"}
            reply = await c.get("/cdr", params=params, headers=headers)
        if reply.status_code == 503:  # a client may retry: it says when
            assert reply.headers["retry-after"] == "1"
            assert reply.json()["code"] == "database_unavailable"
        return reply.status_code

    async def upgrade_status(self) -> int:
        """A resume's upgrade (it reads the stored history): 101, or the refusal's status."""
        try:
            async with connect(f"{self.ws_url}&last_event_id=1", proxy=None, open_timeout=10):
                return 101
        except InvalidStatus as refused:
            response = refused.response
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert orjson.loads(response.body)["code"] == "database_unavailable"
        return response.status_code

    async def health(self) -> tuple[int, str]:
        async with httpx.AsyncClient(timeout=10) as c:
            reply = await c.get(f"http://127.0.0.1:{self.port}/healthz")
        return reply.status_code, reply.json()["database"]


@contextlib.asynccontextmanager
async def server_on_private_pg(tmp_path: Path, engine_stream: str = "") -> AsyncIterator[Server]:
    async with private_postgres() as pg:
        tenants = Tenants()
        runtime = build_runtime(make_settings(tmp_path / "setup", pg.url))
        await runtime.migrate()
        await create_tenants(runtime, tenants)
        await runtime.engine.dispose()
        port = free_port()
        env = {
            "CLOUDPBX_DATABASE_URL": pg.url,
            "CLOUDPBX_BACKEND": "simulator",
            "CLOUDPBX_SIMULATOR_RATE": "3",
            "CLOUDPBX_SIMULATOR_SPEED": "20",
            "CLOUDPBX_SIMULATOR_BACKFILL_DAYS": "0",
        }
        if engine_stream:
            env |= {
                "CLOUDPBX_EVENT_ENGINE_URL": NATS_URL,
                "CLOUDPBX_EVENT_ENGINE_STREAM": engine_stream,
            }
        log = tmp_path / "server.log"
        proc: subprocess.Popen[bytes] = serve(
            ["--port", str(port), "--data", str(tmp_path / "data")], env, log
        )
        try:
            await wait_healthy(port, proc)
            yield Server(pg, port, tenants, pg.url, log)
        finally:
            await stop(proc)
            print(f"server log tail:\n{log.read_text()[-3000:]}")


@dataclass
class Outage:
    stopped_at: float
    started_at: float
    healthy_after_s: float
    health_down: list[tuple[int, str]]
    rest_down: list[int]
    upgrades_down: list[int]
    rest_after: int


async def restart_database(server: Server, upgrades: bool = False) -> Outage:
    """Stop PostgreSQL for DOWN_S, asking /healthz and REST (and with `upgrades`, a
    resume's WebSocket upgrade) meanwhile; start it again and wait (bounded) for /healthz
    to say ok. (On the default path a resume waits for the database: not asked there.)"""
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(server.pg.stop)
    stopped_at = loop.time()
    health_down: list[tuple[int, str]] = []
    rest_down: list[int] = []
    upgrades_down: list[int] = []
    while loop.time() - stopped_at < DOWN_S:
        health_down.append(await server.health())
        rest_down.append(await server.rest_status())
        if upgrades:
            upgrades_down.append(await server.upgrade_status())
        await asyncio.sleep(0.3)
    await asyncio.to_thread(server.pg.start)
    started_at = loop.time()
    for _ in range(300):
        if await server.health() == (200, "ok"):
            break
        await asyncio.sleep(0.1)
    healthy_after_s = loop.time() - started_at
    rest_after = await server.rest_status()
    return Outage(
        stopped_at, started_at, healthy_after_s, health_down, rest_down, upgrades_down, rest_after
    )


def stream_figures(reader: Reader, outage: Outage) -> str:
    """The longest silence the client saw around the outage, and the ids it never got
    (skipped: numbered, then dropped unstored, so never sent to anyone)."""
    times = [at for at, _, _ in reader.got if outage.stopped_at - 1 < at < outage.started_at + 5]
    silence = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    ids = [i for _, i, _ in reader.got]
    skipped = sum(b - a - 1 for a, b in itertools.pairwise(ids))
    return f"longest silence {silence:.2f} s, {skipped} ids skipped"


def assert_outage_reported(outage: Outage, server: Server) -> None:
    assert outage.health_down, "nothing asked while the database was down"
    assert all(status == 503 for status, _ in outage.health_down), outage.health_down
    assert all(database.startswith("error") for _, database in outage.health_down)
    assert set(outage.rest_down) == {503}, outage.rest_down
    assert set(outage.upgrades_down) <= {503}, outage.upgrades_down
    assert outage.healthy_after_s < 30
    assert outage.rest_after == 200
    log = server.log.read_text()
    assert "database unavailable on GET /cdr" in log
    assert "Exception in ASGI application" not in log  # no traceback per refused request
    assert "unhandled error" not in log
    assert "WebSocket handshake" not in log  # api/pbx_socket.py's line for a failed upgrade


async def stored_messages(conn: asyncpg.Connection, pbx_name: str) -> dict[int, str]:
    """id → data of every message the database holds for the PBX, in whichever form:
    the archive's rows (`event`), or the single-process hub's log and chunks."""
    pbx_id = await conn.fetchval("SELECT id FROM pbx WHERE name = $1", pbx_name)
    rows = await conn.fetch("SELECT id, data FROM event WHERE pbx_id = $1", pbx_id)
    stored = {row["id"]: row["data"] for row in rows}
    for data in await conn.fetch("SELECT data FROM event_chunk WHERE pbx_id = $1", pbx_id):
        stored.update((i, d) for i, d in orjson.loads(data["data"]))
    for data in await conn.fetch("SELECT data FROM event_log"):
        stored.update((i, d) for p, i, d in orjson.loads(data["data"]) if p == pbx_id)
    return stored


async def assert_all_seen_are_stored(server: Server, reader: Reader) -> float:
    """Every message the client saw, byte for byte, in the database (bounded wait: the
    archive may still be catching up); the (loop) time it was complete."""
    loop = asyncio.get_running_loop()
    seen = {message_id: raw for _, message_id, raw in reader.got}
    stored: dict[int, str] = {}
    for _ in range(200):
        conn = await asyncpg.connect(server.database)
        try:
            stored = await stored_messages(conn, server.tenants.a_name)
        finally:
            await conn.close()
        if seen.keys() <= stored.keys():
            break
        await asyncio.sleep(0.1)
    missing = sorted(seen.keys() - stored.keys())
    assert not missing, f"seen but not stored: {missing[:10]} (of {len(missing)})"
    assert all(orjson.loads(stored[i]) == orjson.loads(raw) for i, raw in seen.items())
    return loop.time()


async def assert_fresh_replay_matches(server: Server, reader: Reader) -> None:
    """A new client resuming from before the first message gets the same stream."""
    first, last = reader.got[0][1], reader.last_id
    replayed: list[tuple[int, str]] = []
    url = f"{server.ws_url}&last_event_id={first - 1}"
    async with connect(url, proxy=None) as ws:
        assert ws.response is not None and ws.response.headers["x-resume"] == "complete"
        while not replayed or replayed[-1][0] < last:
            raw = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(raw, str)
            replayed.append((orjson.loads(raw)["id"], raw))
    replayed = [(i, raw) for i, raw in replayed if i <= last]
    assert [i for i, _ in replayed] == [i for _, i, _ in reader.got]
    assert [raw for _, raw in replayed] == [raw for _, _, raw in reader.got]


async def test_database_restart_on_the_default_path(tmp_path: Path) -> None:
    async with server_on_private_pg(tmp_path) as server:
        reader = Reader(server.ws_url)
        task = asyncio.create_task(reader.run())
        try:
            await reader.wait_for(10)
            before = reader.last_id
            outage = await restart_database(server)
            await reader.wait_for(10, beyond=max(before, reader.last_id))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert_outage_reported(outage, server)
        # Any close the server started named its resume id, and every resume was complete.
        assert set(reader.resumes) <= {"complete"}, (reader.closes, reader.resumes)
        # Held and retried through the outage, then stored and sent: no id skipped.
        ids = [i for _, i, _ in reader.got]
        assert ids == list(range(ids[0], ids[-1] + 1)), stream_figures(reader, outage)
        print(
            f"default path: database down {outage.started_at - outage.stopped_at:.1f} s; "
            f"/healthz ok {outage.healthy_after_s:.2f} s after the start; "
            f"{stream_figures(reader, outage)}; closes {reader.closes}, resumes {reader.resumes}"
        )
        await assert_all_seen_are_stored(server, reader)
        await assert_fresh_replay_matches(server, reader)


async def test_database_restart_with_the_engine(tmp_path: Path) -> None:
    async with own_stream() as stream, server_on_private_pg(tmp_path, stream) as server:
        reader = Reader(server.ws_url)
        task = asyncio.create_task(reader.run())
        try:
            await reader.wait_for(10)
            outage = await restart_database(server, upgrades=True)
            await reader.wait_for(10, beyond=reader.last_id)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert_outage_reported(outage, server)
        assert outage.upgrades_down, "no resume tried while the database was down"
        assert reader.closes == [], reader.closes  # delivery never needed the database
        during = [i for at, i, _ in reader.got if outage.stopped_at < at < outage.started_at]
        assert during, "no event reached the client while the database was down"
        complete_at = await assert_all_seen_are_stored(server, reader)
        print(
            f"engine: archive complete {complete_at - outage.started_at:.2f} s after the "
            "database was back; "
            f"database down {outage.started_at - outage.stopped_at:.1f} s, "
            f"{len(during)} messages delivered meanwhile; /healthz ok "
            f"{outage.healthy_after_s:.2f} s after the start; {stream_figures(reader, outage)} "
            "(the engine's ids are its stream's, shared by the PBXes: skips are not losses); "
            f"upgrades meanwhile {outage.upgrades_down}"
        )
        await assert_fresh_replay_matches(server, reader)
