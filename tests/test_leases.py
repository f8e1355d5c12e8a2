"""Leases (storage/leases.py, services/leadership.py) on SQLite and PostgreSQL: one holder
per term, a token that grows with every term, a stale term refused by the database,
acquirers racing from separate connections and from separate processes."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.ports.lease import Term
from cloudpbx.services.leadership import Leadership
from cloudpbx.storage import migrate
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.leases import SqlLeaseStore


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


def lease_name() -> str:
    return f"test:{secrets.token_hex(6)}"


async def acquire_within(store: SqlLeaseStore, name: str, holder: str, ttl: float) -> Term:
    """The first term `holder` gets, trying for 10 s (an expiry is being waited for)."""
    for _ in range(200):
        term = await store.acquire(name, holder, ttl)
        if term is not None:
            return term
        await asyncio.sleep(0.05)
    raise AssertionError(f"{holder} never got {name}")


async def test_a_term_is_exclusive_and_each_new_term_has_a_higher_token(
    engine: AsyncEngine,
) -> None:
    store = SqlLeaseStore(engine)
    name = lease_name()
    first = await store.acquire(name, "A", 60)
    assert first == Term(name, "A", 1)
    assert await store.acquire(name, "B", 60) is None
    assert await store.acquire(name, "A", 60) is None  # a holder does not start a second term
    assert await store.renew(first, 60)
    assert await store.is_current(first)

    await store.release(first)
    second = await store.acquire(name, "B", 0.3)
    assert second == Term(name, "B", 2)
    # The released term is over for good: the database refuses its token.
    assert not await store.renew(first, 60)
    assert not await store.is_current(first)
    await store.release(first)  # a stale release leaves the live term alone
    assert await store.is_current(second)

    # B stops renewing: its term expires by the database's clock, and C takes over.
    third = await acquire_within(store, name, "C", 60)
    assert third.token == 3
    assert not await store.renew(second, 60)
    assert not await store.is_current(second)


async def test_concurrent_acquirers_on_separate_connections_one_winner_per_term(
    database_url: str, engine: AsyncEngine
) -> None:
    engines = [create_engine(database_url) for _ in range(6)]
    stores = [SqlLeaseStore(e) for e in engines]
    name = lease_name()
    try:
        tokens: list[int] = []
        for _ in range(5):
            terms = await asyncio.gather(
                *(store.acquire(name, f"holder{i}", 60) for i, store in enumerate(stores))
            )
            winners = [term for term in terms if term is not None]
            assert len(winners) == 1, terms
            tokens.append(winners[0].token)
            await stores[0].release(winners[0])
        assert tokens == [1, 2, 3, 4, 5]
    finally:
        for e in engines:
            await e.dispose()


ACQUIRER = """
import asyncio, json, os, sys, time
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.leases import SqlLeaseStore

async def main(url, name, seconds):
    engine = create_engine(url)
    store = SqlLeaseStore(engine)
    holder = f"proc{os.getpid()}"
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        term = await store.acquire(name, holder, 0.4)
        if term is None:
            await asyncio.sleep(0.01)
            continue
        renewed = await store.renew(term, 0.4)
        print(json.dumps([term.token, renewed]), flush=True)
        await store.release(term)
        await asyncio.sleep(0.02)
    await engine.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


async def test_acquirers_in_four_processes_never_share_a_term(
    pg_database: str, tmp_path: Path
) -> None:
    """Four processes race for one lease for 3 s, each holding, renewing and releasing
    whatever term it wins: every token is won exactly once, and they run 1..n."""
    engine = create_engine(pg_database)
    await migrate.upgrade(engine)
    await engine.dispose()
    name = lease_name()
    script = tmp_path / "acquirer.py"
    script.write_text(ACQUIRER)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(script), pg_database, name, "3", stdout=subprocess.PIPE
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(60):
        outputs = [await p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    won = [[json.loads(line) for line in out.decode().splitlines()] for out, _ in outputs]
    tokens = [token for lines in won for token, _renewed in lines]
    assert len(tokens) >= 8, won
    assert sorted(tokens) == list(range(1, len(tokens) + 1)), won
    for lines in won:  # one process's own terms come in increasing order
        mine = [token for token, _ in lines]
        assert mine == sorted(mine)
    # Whoever won renewed its own term: no other process had taken it meanwhile.
    assert all(renewed for lines in won for _, renewed in lines)


class Job:
    """What a guarded job saw: gains with their tokens, losses with their reasons."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    async def gain(self, term: Term) -> None:
        self.events.append(("gain", term.token))

    async def loss(self, why: str) -> None:
        self.events.append(("loss", why))


async def until(check: object, seconds: float = 10.0) -> None:
    assert callable(check)
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_leadership_standby_takes_over_when_the_leader_stops(engine: AsyncEngine) -> None:
    store = SqlLeaseStore(engine)
    name = lease_name()
    job_a, job_b = Job(), Job()
    a = Leadership(store, name, "A", 0.6, job_a.gain, job_a.loss)
    b = Leadership(store, name, "B", 0.6, job_b.gain, job_b.loss)
    a.start()
    await until(a.holds)
    b.start()
    try:
        # Several renewal rounds of both: the leader keeps its term, the standby waits.
        await asyncio.sleep(1.5)
        assert a.holds() and a.state == "leader"
        assert not b.holds() and b.state == "standby"
        assert job_a.events == [("gain", 1)] and job_b.events == []

        await a.stop()  # releases: the standby need not wait for an expiry
        assert job_a.events == [("gain", 1), ("loss", "stopping")]
        await until(b.holds)
        assert job_b.events == [("gain", 2)]
        assert b.term is not None and b.term.token == 2
    finally:
        await a.stop()
        await b.stop()
    assert not await store.is_current(Term(name, "B", 2))
