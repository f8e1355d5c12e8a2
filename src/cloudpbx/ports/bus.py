"""The event bus port: numbered, serialized messages fanned out per channel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class WireMessage:
    """One WebSocket message, serialized once (JSON text) and shared by every subscriber."""

    id: int
    data: str


@dataclass(frozen=True, slots=True)
class FramedBatch:
    """Consecutive messages of one channel, encoded once for all of its subscribers.

    `frames[i]` is `messages[i]` on the wire; `joined` is all of them in one bytes object,
    which a subscriber that had everything before `messages[0]` writes in one call.
    """

    messages: Sequence[WireMessage]
    frames: Sequence[bytes]
    joined: bytes

    @property
    def first_id(self) -> int:
        return self.messages[0].id

    @property
    def last_id(self) -> int:
        return self.messages[-1].id


class Sink(Protocol):
    """A subscriber: takes batches synchronously and never makes the publisher wait.

    A sink that cannot keep up deals with it itself (a WebSocket connection closes with
    4008); it may unsubscribe from inside `deliver`.
    """

    def deliver(self, batch: FramedBatch) -> None: ...

    def bus_closed(self) -> None:
        """The bus is shutting down: nothing more will come."""
        ...

    def missed(self) -> None:
        """Messages of the channel were lost on their way to this process (docs/
        operations.md, "Event engine"): the subscriber must resume elsewhere."""
        ...


class EventBus(Protocol):
    """Fan-out of wire messages; never blocks the publisher on a slow subscriber."""

    def publish_batch(self, channel: str, messages: Sequence[WireMessage]) -> None:
        """Fan a committed batch of one channel out to this process's subscribers, in
        order, without waiting: the one path every local delivery takes (the hub's group
        commit, and a cross-process engine's reader)."""
        ...

    def cut_off(self, channel: str) -> None:
        """Tell every subscriber of the channel that messages were lost (`Sink.missed`)."""
        ...

    def subscribe(self, channel: str, sink: Sink) -> None: ...

    def unsubscribe(self, channel: str, sink: Sink) -> None: ...

    def subscriber_count(self, channel: str) -> int: ...

    def channels(self) -> frozenset[str]:
        """Channels with a local subscriber: what a cross-process reader must follow."""
        ...

    async def close(self) -> None: ...
