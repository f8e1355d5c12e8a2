"""In-process event bus: one server process, subscribers are asyncio tasks.

Each subscriber has a bounded buffer. Publishing appends to every subscriber's buffer and
wakes it; it never awaits a subscriber, so one slow WebSocket client cannot delay the
others. A subscriber whose buffer is full is marked overflowed: it gets what it already
had buffered, then SubscriberOverflow, and its connection is closed so the client resumes
from its last id out of the history.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from cloudpbx.ports.bus import SubscriberOverflow, WireMessage


class MemorySubscription:
    """A bounded, wakeable buffer of one channel's messages for one consumer."""

    __slots__ = (
        "_buffer",
        "_bus",
        "_channel",
        "_closed",
        "_last_id",
        "_max",
        "_overflowed",
        "_waiter",
        "on_overflow",
    )

    def __init__(self, bus: MemoryBus, channel: str, max_buffered: int) -> None:
        self._bus = bus
        self._channel = channel
        self._max = max_buffered
        # A list, not a deque: it is only appended to and swapped out whole, and an empty
        # list is ~0.6 KiB smaller, per connection.
        self._buffer: list[WireMessage] = []
        self._waiter: asyncio.Future[None] | None = None
        self._overflowed = False
        self._closed = False
        self._last_id = 0
        self.on_overflow: Callable[[], object] | None = None
        """Called once, the moment the buffer overflows, even while the consumer is stuck
        writing (a callback rather than an Event and a watcher task: smaller per client)."""

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def push(self, message: WireMessage) -> None:
        if self._overflowed or self._closed:
            return
        if len(self._buffer) >= self._max:
            self._overflowed = True
            self._bus.detach(self._channel, self)
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            self._buffer.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drain(self) -> list[WireMessage]:
        """Everything buffered now, without waiting (lets a sender batch its writes)."""
        items, self._buffer = self._buffer, []
        if items:
            self._last_id = items[-1].id
        return items

    async def next_batch(self) -> list[WireMessage]:
        """Wait for messages; [] once closed; SubscriberOverflow once it fell behind."""
        while not self._buffer:
            if self._overflowed:
                raise SubscriberOverflow(self._last_id)
            if self._closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.drain()

    async def __aiter__(self) -> AsyncIterator[WireMessage]:
        while batch := await self.next_batch():
            for message in batch:
                yield message

    def close(self) -> None:
        self._closed = True
        self._bus.detach(self._channel, self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class MemoryBus:
    """Channel name → live subscriptions, all in this process."""

    def __init__(self) -> None:
        self._channels: dict[str, set[MemorySubscription]] = {}

    async def publish(self, channel: str, message: WireMessage) -> None:
        self.publish_nowait(channel, message)

    def publish_nowait(self, channel: str, message: WireMessage) -> None:
        for subscription in tuple(self._channels.get(channel, ())):
            subscription.push(message)

    def publish_batch(self, channel: str, messages: Sequence[WireMessage]) -> None:
        for message in messages:
            self.publish_nowait(channel, message)

    def subscribe(self, channel: str, max_buffered: int) -> MemorySubscription:
        subscription = MemorySubscription(self, channel, max_buffered)
        self._channels.setdefault(channel, set()).add(subscription)
        return subscription

    def detach(self, channel: str, subscription: MemorySubscription) -> None:
        members = self._channels.get(channel)
        if members is not None:
            members.discard(subscription)
            if not members:
                del self._channels[channel]

    def subscriber_count(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    async def close(self) -> None:
        for members in list(self._channels.values()):
            for subscription in list(members):
                subscription.close()
