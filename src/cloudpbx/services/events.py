"""Numbering, history and fan-out of a PBX's WebSocket messages.

Ids: per channel, strictly increasing, never reused, also across restarts. They are
handed out from blocks reserved in the `pbx` row (one small write per block, not per
event); a crash skips the rest of the block, a clean shutdown gives it back.

History: the newest `history_size` messages per PBX stay in memory (loaded from the
database at first use) for instant resume; every message is also written to the `event`
table in small batches, off the publishing path, and older rows are pruned. A failing
write is retried with back-off, one transaction per PBX, and given up after
`MAX_ATTEMPTS` (the messages stay in memory). close() waits for a write in flight, writes
what is left and gives unused ids back.

After an unclean stop the ids between the newest stored message and the end of the
reserved block may have reached clients without being stored: a resume from before that
point is answered as partial rather than vouched for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from cloudpbx.domain.events import Event, channel_name, group_into_texts
from cloudpbx.ports.bus import EventBus, WireMessage
from cloudpbx.storage.events import EventStore
from cloudpbx.storage.tenants import Tenant, TenantStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Consecutive failed writes of the same pending messages before they are dropped."""
MAX_BACKOFF = 5.0
"""Longest pause, in seconds, between retries of a failing write."""


@dataclass(slots=True)
class _Channel:
    tenant: Tenant
    history: deque[WireMessage]
    next_id: int = 0
    reserved_up_to: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    uncertain_up_to: int = 0
    """Ids up to this one may have been sent without reaching the database (a process that
    stopped uncleanly, or writes that were given up): resuming from before it cannot be
    vouched for, so such a resume is answered as partial."""


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
    """Assigns ids, keeps the history and publishes to the bus."""

    def __init__(
        self,
        tenants: TenantStore,
        store: EventStore,
        bus: EventBus,
        *,
        history_size: int = 10_000,
        id_block: int = 1_000,
        flush_interval: float = 0.05,
    ) -> None:
        self._tenants = tenants
        self._store = store
        self._bus = bus
        self._history_size = history_size
        self._id_block = id_block
        self._flush_interval = flush_interval
        self._channels: dict[int, _Channel] = {}
        self._pending: list[tuple[int, WireMessage]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._closing = asyncio.Event()
        self._flushed_since_prune = 0
        self._failed_attempts = 0

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def _channel(self, tenant: Tenant) -> _Channel:
        channel = self._channels.get(tenant.id)
        if channel is None:
            history = deque(
                await self._store.latest(tenant.id, self._history_size),
                maxlen=self._history_size,
            )
            # After a clean stop every id handed out was persisted and the unused ones were
            # given back, so the reservation ends at the newest stored id. Beyond it, ids
            # may have gone out to clients and been lost with the process.
            reserved = await self._store.reserved_up_to(tenant.id)
            newest = history[-1].id if history else 0
            uncertain = reserved if reserved > newest else 0
            if uncertain:
                log.warning(
                    "PBX %s: ids %d-%d may have been sent but not stored (unclean stop); "
                    "resuming from before %d is answered as partial",
                    tenant.name,
                    newest + 1,
                    reserved,
                    reserved,
                )
            channel = self._channels.setdefault(
                tenant.id, _Channel(tenant, history, uncertain_up_to=uncertain)
            )
        return channel

    async def publish(self, tenant: Tenant, events: Sequence[Event]) -> list[WireMessage]:
        """Publish the events of one change as few messages as the contract allows."""
        texts = group_into_texts(events)
        if not texts:
            return []
        channel = await self._channel(tenant)
        name = channel_name(tenant.name)
        messages: list[WireMessage] = []
        try:
            async with channel.lock:
                for text in texts:
                    if channel.next_id > channel.reserved_up_to:
                        first = await self._tenants.reserve_event_ids(tenant.id, self._id_block)
                        channel.next_id = first
                        channel.reserved_up_to = first + self._id_block - 1
                    message_id = channel.next_id
                    channel.next_id += 1
                    text_json = {"id": message_id, "channel": name, "text": text}
                    message = WireMessage(message_id, orjson.dumps(text_json).decode())
                    channel.history.append(message)
                    self._pending.append((tenant.id, message))
                    messages.append(message)
                    await self._bus.publish(name, message)
        finally:
            # Also when a reservation failed half-way: what did go out gets persisted.
            if messages:
                self._schedule_flush()
        return messages

    async def replay_after(self, tenant: Tenant, last_id: int) -> Replay:
        """Every kept message with id > last_id, oldest first."""
        channel = await self._channel(tenant)
        history = channel.history
        vouched = last_id >= channel.uncertain_up_to
        newest = history[-1].id if history else 0
        if last_id >= newest:
            return Replay([], vouched, newest)
        messages = [m for m in history if m.id > last_id]
        # A history that never filled up was never pruned, whatever gaps its ids have.
        kept = history[0].id <= last_id + 1 or len(history) < self._history_size
        return Replay(messages, kept and vouched, newest)

    async def last_id(self, tenant: Tenant) -> int:
        channel = await self._channel(tenant)
        return channel.history[-1].id if channel.history else 0

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name="event-hub-flush")

    async def _nap(self, seconds: float) -> None:
        """Sleep, but not once close() has begun (it wakes a sleeping flusher)."""
        if not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

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
        """Write pending messages to the database and prune what fell out of history.

        Returns False when some writes failed; they stay pending (in order) and are retried
        by the next flush, at most `MAX_ATTEMPTS` times in a row before they are dropped
        from the persisted history (they stay in the in-memory history regardless).
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
        failed: list[tuple[int, WireMessage]] = []
        # One transaction per PBX: a PBX deleted meanwhile fails alone.
        for pbx_id, group in groups.items():
            try:
                await self._store.append(group)
            except Exception:
                log.exception(
                    "could not persist %d WebSocket messages of PBX %d", len(group), pbx_id
                )
                failed.extend(group)
            else:
                self._flushed_since_prune += len(group)
        if not failed:
            self._failed_attempts = 0
            return True
        self._failed_attempts += 1
        if self._failed_attempts >= MAX_ATTEMPTS:
            log.error(
                "dropping %d WebSocket messages from the persisted history after %d failed "
                "attempts (they stay in memory)",
                len(failed),
                self._failed_attempts,
            )
            self._failed_attempts = 0
        else:
            self._pending[:0] = failed
        return False

    async def _prune_if_due(self) -> None:
        if self._flushed_since_prune < max(1, self._history_size // 10):
            return
        self._flushed_since_prune = 0
        # A copy: a channel may be added while a prune awaits the database.
        for channel in list(self._channels.values()):
            history = channel.history
            if history and len(history) == self._history_size:
                try:
                    await self._store.prune(channel.tenant.id, history[0].id - 1)
                except Exception:
                    log.exception(
                        "could not prune the WebSocket history of PBX %d", channel.tenant.id
                    )

    async def close(self) -> None:
        """Flush everything and give unused reserved ids back (no gap after a clean stop).

        The flusher is woken, not cancelled: cancelling it in the middle of a write would
        lose the batch it holds.
        """
        self._closing.set()
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(Exception):
                await flusher
        while self._pending and not await self.flush():
            pass  # bounded: after MAX_ATTEMPTS failures the rest is dropped
        for channel in list(self._channels.values()):
            async with channel.lock:
                if channel.reserved_up_to >= channel.next_id:
                    await self._tenants.release_event_ids(
                        channel.tenant.id, channel.reserved_up_to, channel.next_id - 1
                    )
                    # Released ids are no longer ours: a late publish reserves anew.
                    channel.reserved_up_to = channel.next_id - 1
