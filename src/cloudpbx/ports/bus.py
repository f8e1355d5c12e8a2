"""The event bus port: numbered, serialized messages fanned out per channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class WireMessage:
    """One WebSocket message, serialized once (JSON text) and shared by every subscriber."""

    id: int
    data: str


class SubscriberOverflow(Exception):
    """The subscriber's bounded buffer filled up: it is too slow and must resume later."""

    def __init__(self, last_delivered_id: int) -> None:
        super().__init__(f"subscriber fell behind after message {last_delivered_id}")
        self.last_delivered_id = last_delivered_id


class Subscription(Protocol):
    """A live feed of one channel.

    `next_batch` waits for messages and returns all that are buffered (so a sender can
    write them together), [] once closed, and raises SubscriberOverflow when it fell behind.
    """

    on_overflow: Callable[[], object] | None
    """Called once, as soon as the subscriber fell behind, so a stuck writer can be cut off."""

    @property
    def overflowed(self) -> bool: ...

    async def next_batch(self) -> list[WireMessage]: ...

    def __aiter__(self) -> AsyncIterator[WireMessage]: ...

    def close(self) -> None: ...


class EventBus(Protocol):
    """Fan-out of wire messages; never blocks the publisher on a slow subscriber."""

    async def publish(self, channel: str, message: WireMessage) -> None: ...

    def publish_batch(self, channel: str, messages: Sequence[WireMessage]) -> None:
        """Fan a committed batch of one channel out to this process's subscribers, in
        order, without waiting: the one path every local delivery takes (the hub's group
        commit, and a cross-process engine's reader)."""
        ...

    def subscribe(self, channel: str, max_buffered: int) -> Subscription: ...

    async def close(self) -> None: ...
