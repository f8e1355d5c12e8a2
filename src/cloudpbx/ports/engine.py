"""The event engine port: one durable, ordered log of every PBX's messages, shared by all
server processes (docs/operations.md, "Event engine"; why NATS JetStream: docs/decisions.md).

The engine numbers what it stores: an id is the log's sequence number, so ids are
strictly increasing per PBX and never reused, whichever process published, and every
reader sees them in the same order. A message's `text` is the JSON of its WebSocket
`text` field; the envelope (`id`, `channel`) is added by whoever delivers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class EngineNotAnswering(Exception):
    """The engine did not answer a read in time (stopped, stalled, reconnecting): a
    passing state, for which a client is told to retry, never a bug of ours."""


@dataclass(frozen=True, slots=True)
class EngineMessage:
    id: int
    text: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to append; `key` makes a retried append a no-op, not a duplicate."""

    pbx_id: int
    text: bytes
    key: str


@dataclass(frozen=True, slots=True)
class EngineRange:
    """A PBX's stored messages after some id (oldest first) and its newest id (0: none)."""

    messages: list[EngineMessage]
    newest: int


class Follower(Protocol):
    @property
    def last_id(self) -> int:
        """The newest id handed over so far."""
        ...

    def stop(self) -> None: ...


class EventEngine(Protocol):
    """`newest`, `newest_of`, `read_after` and `follow` raise `EngineNotAnswering` when
    the engine does not answer in time."""

    async def start(self, id_floor: int) -> None:
        """Connect, and make sure new ids are above `id_floor` (ids the database holds)."""
        ...

    async def append(self, batch: Sequence[Outgoing]) -> list[int | None]:
        """Store the batch in order; the id of each, None where it was not stored."""
        ...

    async def newest(self) -> int:
        """The newest id of the whole log (any PBX); 0 when empty."""
        ...

    async def newest_of(self, pbx_id: int) -> int:
        """The PBX's newest id; 0 when the engine holds none of its messages."""
        ...

    async def read_after(self, pbx_id: int, after_id: int) -> EngineRange:
        """The PBX's messages still kept by the engine with id > after_id."""
        ...

    async def follow(
        self,
        pbx_id: int,
        after_id: int,
        deliver: Callable[[list[EngineMessage]], None],
        fill_gap: Callable[[int, int], Awaitable[None]],
    ) -> Follower:
        """Hand every message of the PBX with id > after_id to `deliver`, in id order,
        each once, across reconnections, until stopped. When the follower fell so far
        behind that the engine may have dropped some of the PBX's messages between two
        ids it hands over, `fill_gap(after, before)` is awaited in between (everything
        before it delivered, nothing after it yet): the owner finds them elsewhere or
        tells the readers they were missed."""
        ...

    def health(self) -> str:
        """'ok', or what is wrong (no secrets: the URL is not named)."""
        ...

    async def close(self) -> None: ...
