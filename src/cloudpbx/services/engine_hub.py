"""The event stream of many server processes: the event engine numbers, stores and orders.

Publishing: `publish` queues the texts; a sender hands everything queued to the engine in
one pipelined round (each message keyed, so a retry after a timeout is never a second
copy). The engine's ack makes a message durable and gives it its id; nothing is delivered
by the publishing process itself. An archiver, beside the sender so that a slow database
never delays delivery, then writes the acknowledged messages to the database (a failed
write is retried, not lost).

Delivery: each process keeps ONE follower per channel that has local WebSocket
subscribers (started when a client asks for the channel's newest id or a replay, stopped
by a sweep once its last local subscriber left) and hands what arrives to
`bus.publish_batch`, in id order. Every process gets the engine's order, so every client
of a PBX sees the same ids in the same order, whichever process it is connected to.

Resume: the engine's bounded history, and before it the database archive, so a client
can resume on any process. A process killed between the engine's ack and its archive
write leaves those messages in the engine only: the next process that starts following
the PBX archives what the engine holds beyond the archive (writes are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import orjson
from sqlalchemy.exc import IntegrityError

from cloudpbx.domain.events import Event, channel_name
from cloudpbx.ports.bus import EventBus, WireMessage
from cloudpbx.ports.engine import EngineMessage, EventEngine, Follower, Outgoing
from cloudpbx.services.events import Replay
from cloudpbx.services.stream import texts_of
from cloudpbx.storage.event_archive import EventArchive
from cloudpbx.storage.tenants import Tenant

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0
"""Longest pause, in seconds, between retries while the engine or the database fails."""
MAX_PENDING = 100_000
"""Messages waiting for the engine before the oldest are dropped (never sent to anyone)."""
CLOSE_ROUNDS = 3
ARCHIVE_INTERVAL = 0.05
"""Seconds the archiver gathers acknowledged messages before one database write."""


class LocalBus(EventBus, Protocol):
    def subscriber_count(self, channel: str) -> int: ...


def wire_data(message_id: int, channel: str, text: bytes) -> str:
    """The WebSocket message, byte for byte what orjson makes of {"id", "channel", "text"}
    (a channel name is [A-Za-z0-9_-], nothing to escape)."""
    return f'{{"id":{message_id},"channel":"{channel}","text":{text.decode()}}}'


@dataclass(slots=True)
class _Reader:
    channel: str
    follower: Follower


class EngineHub:
    def __init__(
        self,
        engine: EventEngine,
        archive: EventArchive,
        bus: LocalBus,
        *,
        history_size: int = 10_000,
        bundle: bool = False,
        sweep_interval: float = 5.0,
    ) -> None:
        self._engine = engine
        self._archive = archive
        self._bus = bus
        self._history_size = history_size
        self._bundle = bundle
        self._sweep_interval = sweep_interval
        self._keys = itertools.count()
        self._key_prefix = secrets.token_hex(8)
        self._pending: list[tuple[Tenant, Outgoing]] = []
        self._unarchived: dict[int, list[WireMessage]] = {}
        self._archived_since_prune: dict[int, int] = {}
        self._readers: dict[int, _Reader] = {}
        self._starting: dict[int, asyncio.Task[_Reader]] = {}
        self._sender: asyncio.Task[None] | None = None
        self._archiver: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._archive_lock = asyncio.Lock()

    @property
    def bus(self) -> EventBus:
        return self._bus

    @property
    def engine(self) -> EventEngine:
        return self._engine

    async def start(self) -> None:
        await self._archive.adopt_single_process_history()
        await self._engine.start(await self._archive.id_floor())
        self._sweeper = asyncio.create_task(self._sweep(), name="engine-sweep")

    async def publish(self, tenant: Tenant, events: Sequence[Event]) -> Sequence[WireMessage]:
        """Queue the texts; returns [] since the engine numbers them when it stores them."""
        for text in texts_of(events, self._bundle):
            key = f"{self._key_prefix}-{next(self._keys)}"
            self._pending.append((tenant, Outgoing(tenant.id, orjson.dumps(text), key)))
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            log.error("event engine unreachable: dropped %d unsent messages", dropped)
        if self._pending and (self._sender is None or self._sender.done()):
            self._sender = asyncio.create_task(self._send_soon(), name="engine-send")
        return []

    async def _send_soon(self) -> None:
        delay = 0.0
        while self._pending:
            await asyncio.sleep(delay)  # 0: lets what is published in this tick join
            async with self._send_lock:
                ok = await self._send_pending()
            if self._unarchived and (self._archiver is None or self._archiver.done()):
                self._archiver = asyncio.create_task(self._archive_soon(), name="engine-archive")
            delay = 0.0 if ok else min(max(delay * 2, 0.05), MAX_BACKOFF)

    async def _archive_soon(self) -> None:
        """Archiving runs beside sending: a slow database never delays delivery. It
        gathers `ARCHIVE_INTERVAL` of messages per transaction (the CPU it saves is the
        event loop's, which delivers too)."""
        delay = ARCHIVE_INTERVAL
        while self._unarchived:
            await asyncio.sleep(delay)
            async with self._archive_lock:
                ok = await self._archive_acknowledged()
            delay = ARCHIVE_INTERVAL if ok else min(max(delay * 2, 0.1), MAX_BACKOFF)

    async def flush(self) -> bool:
        """Send what is queued and archive what was acknowledged, now. False when
        something is left for a retry."""
        async with self._send_lock:
            sent = await self._send_pending()
        async with self._archive_lock:
            archived = await self._archive_acknowledged()
        return sent and archived

    async def _send_pending(self) -> bool:
        batch, self._pending = self._pending, []
        if not batch:
            return True
        try:
            ids = await self._engine.append([outgoing for _, outgoing in batch])
        except Exception:
            log.exception("event engine: publishing failed")
            ids = [None] * len(batch)
        failed = [item for item, message_id in zip(batch, ids, strict=True) if message_id is None]
        for (tenant, outgoing), message_id in zip(batch, ids, strict=True):
            if message_id is not None:
                data = wire_data(message_id, channel_name(tenant.name), outgoing.text)
                self._unarchived.setdefault(tenant.id, []).append(WireMessage(message_id, data))
        if failed:
            log.warning("event engine did not take %d messages; retrying", len(failed))
            self._pending[:0] = failed
        return not failed

    async def _archive_acknowledged(self) -> bool:
        ok = True
        # Taken out first: the sender appends to this dict while a write awaits.
        batch, self._unarchived = self._unarchived, {}
        for pbx_id, messages in batch.items():
            try:
                await self._archive.write(pbx_id, messages)
            except IntegrityError:
                log.warning("PBX %d is gone: %d messages not archived", pbx_id, len(messages))
            except Exception:
                log.exception("could not archive %d messages of PBX %d", len(messages), pbx_id)
                ok = False
                self._unarchived[pbx_id] = messages + self._unarchived.get(pbx_id, [])
                continue
            await self._prune_if_due(pbx_id, len(messages))
        return ok

    async def _prune_if_due(self, pbx_id: int, added: int) -> None:
        count = self._archived_since_prune.get(pbx_id, 0) + added
        if count < max(1, self._history_size // 10):
            self._archived_since_prune[pbx_id] = count
            return
        self._archived_since_prune[pbx_id] = 0
        try:
            await self._archive.prune(pbx_id, self._history_size)
        except Exception:
            log.exception("could not prune the event archive of PBX %d", pbx_id)

    async def _reader(self, tenant: Tenant) -> _Reader:
        """The channel's follower, started once even when many clients arrive at once."""
        reader = self._readers.get(tenant.id)
        if reader is not None:
            return reader
        starting = self._starting.get(tenant.id)
        if starting is None:
            starting = asyncio.create_task(self._start_reader(tenant), name="engine-reader")
            self._starting[tenant.id] = starting
            starting.add_done_callback(lambda _: self._starting.pop(tenant.id, None))
        return await asyncio.shield(starting)

    async def _start_reader(self, tenant: Tenant) -> _Reader:
        channel = channel_name(tenant.name)
        # From the log's newest id: the caller reads anything older from the history.
        after = await self._engine.newest()
        follower = await self._engine.follow(
            tenant.id,
            after,
            partial(self._deliver, channel),
            partial(self._fill_gap, tenant.id, channel),
        )
        reader = _Reader(channel, follower)
        self._readers[tenant.id] = reader
        await self._catch_up_archive(tenant, channel, after)
        return reader

    async def _catch_up_archive(self, tenant: Tenant, channel: str, up_to: int) -> None:
        """Queue for the archive what the engine holds beyond it, up to `up_to`: what a
        process killed between the engine's ack and its archive write left behind (and
        what live publishers are about to write too: archiving is idempotent)."""
        try:
            newest = (await self._archive.bounds(tenant.id)).newest
            held = await self._engine.read_after(tenant.id, newest)
        except Exception:
            log.exception("could not compare the archive of PBX %d with the engine", tenant.id)
            return
        missing = [
            WireMessage(m.id, wire_data(m.id, channel, m.text))
            for m in held.messages
            if m.id <= up_to
        ]
        if missing:
            self._unarchived.setdefault(tenant.id, [])[:0] = missing
            if self._archiver is None or self._archiver.done():
                self._archiver = asyncio.create_task(self._archive_soon(), name="engine-archive")

    async def _fill_gap(self, pbx_id: int, channel: str, after_id: int, before_id: int) -> None:
        """The follower fell behind the engine's history: deliver the PBX's messages
        between the two ids from the archive (and what this process has not archived
        yet), or, when the archive cannot say it has them all, cut the channel's local
        clients off (4008 naming their last id) so that they resume and are told."""
        try:
            async with self._archive_lock:  # this process's messages in a write: wait
                archived = await self._archive.after(pbx_id, after_id, before_id)
                bounds = await self._archive.bounds(pbx_id)
                mine = [m for m in self._unarchived.get(pbx_id, ()) if after_id < m.id < before_id]
        except Exception as exc:
            log.warning("PBX %d: cannot read the archive to fill a gap: %r", pbx_id, exc)
            complete = False
        else:
            complete = bounds.count < self._history_size or bounds.oldest <= after_id + 1
        if not complete:
            log.warning(
                "PBX %d: this process missed messages after id %d that the archive cannot "
                "give; its clients are closed to resume", pbx_id, after_id,
            )  # fmt: skip
            self._bus.cut_off(channel)
            return
        found = {m.id: m for m in archived + mine}
        if found:
            log.info("PBX %d: %d messages after id %d filled from the archive",
                     pbx_id, len(found), after_id)  # fmt: skip
            self._bus.publish_batch(channel, [found[i] for i in sorted(found)])

    def _deliver(self, channel: str, batch: list[EngineMessage]) -> None:
        messages = [WireMessage(m.id, wire_data(m.id, channel, m.text)) for m in batch]
        self._bus.publish_batch(channel, messages)

    async def _sweep(self) -> None:
        """Stops the followers of channels that no local client listens to any more."""
        while True:
            await asyncio.sleep(self._sweep_interval)
            for pbx_id, reader in list(self._readers.items()):
                if self._bus.subscriber_count(reader.channel) == 0:
                    del self._readers[pbx_id]
                    reader.follower.stop()

    def following(self) -> int:
        """How many channels this process follows (one engine subscription each)."""
        return len(self._readers)

    async def last_id(self, tenant: Tenant) -> int:
        reader = await self._reader(tenant)
        newest = await self._engine.newest_of(tenant.id)
        # Whatever the follower already handed over is behind a client subscribing now.
        return max(newest, reader.follower.last_id)

    async def replay_after(self, tenant: Tenant, last_id: int) -> Replay:
        """The engine's kept messages after last_id, and the archive's older ones."""
        reader = await self._reader(tenant)
        live = await self._engine.read_after(tenant.id, last_id)
        before = live.messages[0].id if live.messages else None
        archived = await self._archive.after(tenant.id, last_id, before)
        bounds = await self._archive.bounds(tenant.id)
        messages = archived + [
            WireMessage(m.id, wire_data(m.id, reader.channel, m.text)) for m in live.messages
        ]
        newest = max(live.newest, bounds.newest)
        # The archive keeps the newest rows: holding last_id (or never pruned) means it
        # holds everything after it.
        complete = bounds.count < self._history_size or bounds.oldest <= last_id
        return Replay(messages, complete, newest)

    async def close(self) -> None:
        """Send and archive what is left (a few rounds), then leave the engine."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for _ in range(CLOSE_ROUNDS):
            if not (self._pending or self._unarchived):
                break
            await self.flush()
        if self._pending:
            log.error("event engine unreachable: %d messages never sent", len(self._pending))
        for task in (self._sender, self._archiver):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for reader in self._readers.values():
            reader.follower.stop()
        self._readers.clear()
        await self._engine.close()
