"""Numbering, history and fan-out of a PBX's WebSocket messages.

Ids: per channel, strictly increasing, never reused, also across restarts. They are
handed out from blocks reserved in the `pbx` row (one small write per block, not per
event); a crash skips the rest of the block, a clean shutdown gives it back.

History: the newest `history_size` messages per PBX stay in memory (loaded from the
database at first use) for instant resume; every message is also written to the `event`
table in small batches, off the publishing path, and older rows are pruned.
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


@dataclass(slots=True)
class _Channel:
    tenant: Tenant
    history: deque[WireMessage]
    next_id: int = 0
    reserved_up_to: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class Replay:
    """Messages after a client's last id; `complete` is False when some were pruned."""

    messages: list[WireMessage]
    complete: bool


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
        self._flushed_since_prune = 0

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
            channel = self._channels.setdefault(tenant.id, _Channel(tenant, history))
        return channel

    async def publish(self, tenant: Tenant, events: Sequence[Event]) -> list[WireMessage]:
        """Publish the events of one change as few messages as the contract allows."""
        texts = group_into_texts(events)
        if not texts:
            return []
        channel = await self._channel(tenant)
        name = channel_name(tenant.name)
        messages: list[WireMessage] = []
        async with channel.lock:
            for text in texts:
                if channel.next_id > channel.reserved_up_to:
                    first = await self._tenants.reserve_event_ids(tenant.id, self._id_block)
                    channel.next_id = first
                    channel.reserved_up_to = first + self._id_block - 1
                message_id = channel.next_id
                channel.next_id += 1
                data = orjson.dumps({"id": message_id, "channel": name, "text": text}).decode()
                message = WireMessage(message_id, data)
                channel.history.append(message)
                self._pending.append((tenant.id, message))
                messages.append(message)
                await self._bus.publish(name, message)
        self._schedule_flush()
        return messages

    async def replay_after(self, tenant: Tenant, last_id: int) -> Replay:
        """Every kept message with id > last_id, oldest first."""
        channel = await self._channel(tenant)
        history = channel.history
        if not history or last_id >= history[-1].id:
            return Replay([], True)
        messages = [m for m in history if m.id > last_id]
        # A history that never filled up was never pruned, whatever gaps its ids have.
        complete = history[0].id <= last_id + 1 or len(history) < self._history_size
        return Replay(messages, complete)

    async def last_id(self, tenant: Tenant) -> int:
        channel = await self._channel(tenant)
        return channel.history[-1].id if channel.history else 0

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_interval)
        await self.flush()

    async def flush(self) -> None:
        """Write pending messages to the database and prune what fell out of history."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._store.append(batch)
            except Exception:
                log.exception("could not persist %d WebSocket messages; retrying", len(batch))
                self._pending[:0] = batch
                await asyncio.sleep(1.0)
                continue
            self._flushed_since_prune += len(batch)
        if self._flushed_since_prune >= max(1, self._history_size // 10):
            self._flushed_since_prune = 0
            for channel in self._channels.values():
                if channel.history and len(channel.history) == self._history_size:
                    await self._store.prune(channel.tenant.id, channel.history[0].id - 1)

    async def close(self) -> None:
        """Flush everything and give unused reserved ids back (no gap after a clean stop)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
        for channel in self._channels.values():
            if channel.reserved_up_to >= channel.next_id:
                await self._tenants.release_event_ids(
                    channel.tenant.id, channel.reserved_up_to, channel.next_id - 1
                )
