"""Numbering, history and fan-out of a PBX's WebSocket messages: stored first, then sent.

Ids: per channel, strictly increasing, never reused, also across restarts. They are
handed out from blocks reserved in the `pbx` row (one small write per block, not per
event); the next block is reserved in the background when half of the current one is
used, so publishing does not wait for the database (nor behind another writer's lock)
unless half a block goes out while one reservation is stuck. A crash skips the rest of
the block, a clean shutdown gives it back.

Store before publish: `publish` numbers the messages and queues them; a group commit
every `flush_interval` (a few ms) writes what is queued for all PBXes in one transaction,
and only then appends each PBX's group to its in-memory history and hands it to the bus
in one `publish_batch`, in id order. So every message a client ever saw is in the
database: a crash loses only messages nobody received, and a resume after it is
complete. The same order (commit, then publish) holds for a bus that spans processes:
whoever publishes a message has stored it first.

History: the newest `history_size` messages per PBX stay in memory (loaded from the
database at first use, once per channel even when several callers ask at once) for
instant resume; older rows are pruned. A failed write (the database unreachable) is
retried with back-off and given up after `MAX_ATTEMPTS` (about 30 s of outage): those
messages are never delivered (their ids are skipped). close() waits for a write in
flight, writes what is left and gives unused ids back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from cloudpbx.domain.events import Event, channel_name, group_into_texts
from cloudpbx.ports.bus import EventBus, WireMessage
from cloudpbx.storage.events import EventStore
from cloudpbx.storage.tenants import Tenant, TenantStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 32
"""Consecutive failed writes of the same pending messages before they are dropped. With
the flusher's back-off (0.1 s doubling to `MAX_BACKOFF`) that is about 30 s: a PostgreSQL
restart or fail-over (seconds) delays the stream but loses nothing. 5 attempts (3 s) had
dropped everything published during a 3 s restart (tests/test_pg_restart.py)."""
CLOSE_ATTEMPTS = 3
"""Failed writes after which close() drops what is pending (it does not back off)."""
MAX_BACKOFF = 1.0
"""Longest pause, in seconds, between retries of a failing write: also the most the
stream lags behind a database that is back (5 s had added up to 5 s of silence)."""


_Kept = tuple[int, str]
"""A message in the history: (id, data). A tuple of an int and a str, not a WireMessage,
because CPython's garbage collector stops tracking such tuples: with thousands of
channels the history holds millions of messages, and as tracked objects every full
collection would scan them all (a stall of the event loop for every client) and every
message kept would bring the next full collection nearer."""


@dataclass(slots=True)
class _Channel:
    tenant: Tenant
    name: str
    history: deque[_Kept]
    next_id: int = 0
    reserved_up_to: int = -1
    spare: asyncio.Task[int] | None = None
    """The next block's reservation, started when half of the current block is used."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by whoever awaits the database for this channel's ids (a publisher whose
    block ran out, close() giving ids back)."""
    in_turn: int = 0
    """Callers holding or waiting for `lock`: while there is one, every publisher takes
    its turn behind them, so that ids follow the order of the calls."""


@dataclass(frozen=True, slots=True)
class Replay:
    """Messages after a client's last id; `complete` is False when some were pruned.

    `newest` is the id of the newest message published so far (0 when none): a client
    claiming a later id than that has seen nothing the server knows of.
    """

    messages: list[WireMessage]
    complete: bool
    newest: int = 0


class EventHub:
    """Assigns ids, stores, keeps the history and publishes to the bus, in that order."""

    def __init__(
        self,
        tenants: TenantStore,
        store: EventStore,
        bus: EventBus,
        *,
        history_size: int = 10_000,
        id_block: int = 1_000,
        flush_interval: float = 0.005,
        bundle: bool = False,
    ) -> None:
        self._tenants = tenants
        self._store = store
        self._bus = bus
        self._history_size = history_size
        self._id_block = id_block
        self._flush_interval = flush_interval
        self._bundle = bundle
        self._channels: dict[int, _Channel] = {}
        self._loading: dict[int, asyncio.Future[_Channel]] = {}
        self._pending: list[tuple[int, WireMessage]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._closing = asyncio.Event()
        self._wake: asyncio.Future[None] | None = None
        """The sleeping flusher's timer (close() resolves it early)."""
        self._flushed_since_prune = 0
        self._unpruned: dict[int, _Channel] = {}
        """Channels with a full history that got messages since their last prune: only
        these have rows to prune (with thousands of channels, not a pass over all)."""
        self._failed_attempts = 0

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def _channel(self, tenant: Tenant) -> _Channel:
        """The channel, loaded from the database once: concurrent first callers share the
        one load (two loads would race for the slot and do the work twice)."""
        channel = self._channels.get(tenant.id)
        if channel is not None:
            return channel
        loading = self._loading.get(tenant.id)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[tenant.id] = loading
            try:
                history = deque(
                    (
                        (m.id, m.data)
                        for m in await self._store.latest(tenant.id, self._history_size)
                    ),
                    maxlen=self._history_size,
                )
            except BaseException as exc:
                loading.set_exception(exc)
                loading.exception()  # retrieved: only the waiters, if any, re-raise it
                raise
            finally:
                del self._loading[tenant.id]
            channel = _Channel(tenant, channel_name(tenant.name), history)
            self._channels[tenant.id] = channel
            loading.set_result(channel)
            return channel
        return await asyncio.shield(loading)

    @contextlib.asynccontextmanager
    async def _turn(self, channel: _Channel) -> AsyncIterator[None]:
        """The channel's lock, counted in `in_turn` while held or waited for."""
        channel.in_turn += 1
        try:
            async with channel.lock:
                yield
        finally:
            channel.in_turn -= 1

    async def _next_id(self, channel: _Channel) -> int:
        """An id from the current block, waiting for the next block if it ran out."""
        if channel.next_id > channel.reserved_up_to:
            spare, channel.spare = channel.spare, None
            first = await (spare or self._reserve(channel))
            channel.next_id = first
            channel.reserved_up_to = first + self._id_block - 1
        return self._take_id(channel)

    def _take_id(self, channel: _Channel) -> int:
        """The next id of the current block (the caller made sure there is one); starts
        reserving the next block when half of this one is used."""
        message_id = channel.next_id
        channel.next_id += 1
        left = channel.reserved_up_to - message_id
        if channel.spare is None and left < self._id_block // 2 and not self._closing.is_set():
            channel.spare = asyncio.create_task(self._reserve(channel), name="event-ids")
        return message_id

    def _reserve(self, channel: _Channel) -> Coroutine[Any, Any, int]:
        return self._tenants.reserve_event_ids(channel.tenant.id, self._id_block)

    def texts(self, events: Sequence[Event]) -> list[dict[str, Any]]:
        """One event per `text` (the default), or bundled when the server is set to."""
        if self._bundle:
            return group_into_texts(events)
        return [{event.event_type: event.payload()} for event in events]

    async def publish(self, tenant: Tenant, events: Sequence[Event]) -> list[WireMessage]:
        """Number the events of one change and queue them; they go out once stored.

        Returns the numbered messages at once: the caller (a PBX backend reading its event
        stream) never waits for the database; clients get them after the group commit.
        """
        texts = self.texts(events)
        if not texts:
            return []
        channel = self._channels.get(tenant.id) or await self._channel(tenant)
        if channel.in_turn or channel.reserved_up_to - channel.next_id + 1 < len(texts):
            return await self._publish_in_turn(channel, texts)
        # The common case, without a wait: the block has room and nobody is queued for
        # the channel. Nothing in here awaits, so no other publisher can come between.
        messages = [self._queue(channel, text, self._take_id(channel)) for text in texts]
        self._schedule_flush()
        return messages

    async def _publish_in_turn(
        self, channel: _Channel, texts: list[dict[str, Any]]
    ) -> list[WireMessage]:
        """Publish behind whoever holds the channel (its ids may have to wait for the
        database)."""
        messages: list[WireMessage] = []
        try:
            async with self._turn(channel):
                for text in texts:
                    messages.append(self._queue(channel, text, await self._next_id(channel)))
        finally:
            # Also when a reservation failed half-way: what was numbered gets stored and sent.
            if messages:
                self._schedule_flush()
        return messages

    def _queue(self, channel: _Channel, text: dict[str, Any], message_id: int) -> WireMessage:
        """The numbered message, queued for the next group commit."""
        text_json = {"id": message_id, "channel": channel.name, "text": text}
        message = WireMessage(message_id, orjson.dumps(text_json).decode())
        self._pending.append((channel.tenant.id, message))
        return message

    async def replay_after(self, tenant: Tenant, last_id: int) -> Replay:
        """Every kept message with id > last_id, oldest first."""
        channel = await self._channel(tenant)
        history = channel.history
        newest = history[-1][0] if history else 0
        if last_id >= newest:
            return Replay([], True, newest)
        messages = [WireMessage(i, data) for i, data in history if i > last_id]
        # A history that never filled up was never pruned, whatever gaps its ids have.
        kept = history[0][0] <= last_id + 1 or len(history) < self._history_size
        return Replay(messages, kept, newest)

    async def last_id(self, tenant: Tenant) -> int:
        channel = await self._channel(tenant)
        return channel.history[-1][0] if channel.history else 0

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name="event-hub-flush")

    async def _nap(self, seconds: float) -> None:
        """Sleep, but not once close() has begun (it wakes a sleeping flusher).

        A timer on a future rather than `wait_for` on the closing event: that costs a task
        and twice the CPU per nap, and the flusher naps before every group commit (200
        times a second when busy)."""
        if self._closing.is_set():
            return
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(seconds, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    async def _flush_soon(self) -> None:
        """The write-behind loop: runs while something is pending, backs off on failures."""
        delay = self._flush_interval
        while self._pending:
            await self._nap(delay)
            try:
                written = await self.flush()
            except Exception:  # pragma: no cover - flush logs and keeps its own errors
                log.exception("flushing WebSocket history failed")
                written = False
            delay = self._flush_interval if written else min(max(delay * 2, 0.1), MAX_BACKOFF)

    async def flush(self) -> bool:
        """Write pending messages, then publish them, and prune what fell out of history.

        Returns False when some writes failed; they stay pending (in order) and are retried
        by the next flush, at most `MAX_ATTEMPTS` times in a row before they are dropped
        (never delivered: nobody may see a message that is not stored).
        """
        async with self._flush_lock:
            written = await self._write_pending()
            if written:
                await self._prune_if_due()
            return written

    async def _write_pending(self) -> bool:
        if not self._pending:
            return True
        batch, self._pending = self._pending, []
        groups: dict[int, list[tuple[int, WireMessage]]] = {}
        for item in batch:
            groups.setdefault(item[0], []).append(item)
        failed = await self._commit(batch, groups)
        if not failed:
            self._failed_attempts = 0
            return True
        self._failed_attempts += 1
        # Shutting down, nobody waits for the database to come back (each try may take a
        # connect timeout): a few tries, not MAX_ATTEMPTS.
        limit = CLOSE_ATTEMPTS if self._closing.is_set() else MAX_ATTEMPTS
        if self._failed_attempts >= limit:
            log.error(
                "dropping %d WebSocket messages after %d failed attempts to store them "
                "(never sent: their ids are skipped)",
                len(failed),
                self._failed_attempts,
            )
            self._failed_attempts = 0
        else:
            self._pending[:0] = failed
        return False

    @property
    def _first_failure(self) -> bool:
        """The first failed write logs its traceback; the retries of an outage (up to
        MAX_ATTEMPTS) log one line each."""
        return self._failed_attempts == 0

    @property
    def _failure_level(self) -> int:
        return logging.ERROR if self._first_failure else logging.WARNING

    async def _commit(
        self,
        batch: list[tuple[int, WireMessage]],
        groups: dict[int, list[tuple[int, WireMessage]]],
    ) -> list[tuple[int, WireMessage]]:
        """Store a flush's messages, then deliver each PBX's group; returns what failed.

        Every PBX of the flush shares one transaction, one row of the store's log: with
        thousands of small channels a transaction (or a row) per PBX would be thousands of
        writes a second. It fails only as a whole (the database is unreachable or broken);
        the messages of a PBX deleted meanwhile are stored and delivered to whoever still
        listens, and dropped by the store's merge.
        """
        try:
            await self._store.append(batch)
        except Exception:
            log.log(
                self._failure_level,
                "could not persist %d WebSocket messages of %d PBXes (attempt %d)",
                len(batch), len(groups), self._failed_attempts + 1,
                exc_info=self._first_failure,
            )  # fmt: skip
            return batch
        self._flushed_since_prune += len(batch)
        for pbx_id, group in groups.items():
            self._deliver(pbx_id, group)
        return []

    def _deliver(self, pbx_id: int, stored: list[tuple[int, WireMessage]]) -> None:
        """Stored messages join the history and go to the bus, in id order. Synchronous:
        with one client per PBX this runs once per message (issue 11, bench `channels`)."""
        channel = self._channels[pbx_id]
        history = channel.history
        if len(stored) == 1:
            message = stored[0][1]
            history.append((message.id, message.data))
            messages: list[WireMessage] = [message]
        else:
            messages = [message for _, message in stored]
            history.extend([(m.id, m.data) for m in messages])
        if len(history) == self._history_size:
            self._unpruned[pbx_id] = channel
        self._bus.publish_batch(channel.name, messages)

    async def _prune_if_due(self) -> None:
        if self._flushed_since_prune < max(1, self._history_size // 10):
            return
        self._flushed_since_prune = 0
        # Taken whole: a channel may be delivered to while a prune awaits the database.
        due, self._unpruned = self._unpruned, {}
        for pbx_id, channel in due.items():
            try:
                await self._store.prune(pbx_id, channel.history[0][0] - 1)
            except Exception:
                log.exception("could not prune the WebSocket history of PBX %d", pbx_id)
                self._unpruned.setdefault(pbx_id, channel)  # tried again next time

    async def close(self) -> None:
        """Flush everything and give unused reserved ids back (no gap after a clean stop).

        The flusher is woken, not cancelled: cancelling it in the middle of a write would
        lose the batch it holds.
        """
        self._closing.set()
        if self._wake is not None:
            _resolve(self._wake)
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(Exception):
                await flusher
        while self._pending and not await self.flush():
            pass  # bounded: after CLOSE_ATTEMPTS failures the rest is dropped
        for channel in list(self._channels.values()):
            async with self._turn(channel):
                reserved_up_to = channel.reserved_up_to
                spare, channel.spare = channel.spare, None
                if spare is not None:
                    with contextlib.suppress(Exception):  # a failed one reserved nothing
                        # The spare block is the newest reservation: give it back whole.
                        reserved_up_to = await spare + self._id_block - 1
                if reserved_up_to >= channel.next_id:
                    await self._tenants.release_event_ids(
                        channel.tenant.id, reserved_up_to, channel.next_id - 1
                    )
                # Released ids are no longer ours: a late publish reserves anew.
                channel.reserved_up_to = channel.next_id - 1
        await self._store.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
