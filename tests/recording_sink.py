"""A bus subscriber for tests: keeps what it is given, as a program consuming the bus would."""

from __future__ import annotations

from cloudpbx.ports.bus import EventBus, FramedBatch, WireMessage


class RecordingSink:
    def __init__(self) -> None:
        self.batches: list[FramedBatch] = []
        self.closed = False
        self.missed_count = 0

    def deliver(self, batch: FramedBatch) -> None:
        self.batches.append(batch)

    def bus_closed(self) -> None:
        self.closed = True

    def missed(self) -> None:
        self.missed_count += 1

    def drain(self) -> list[WireMessage]:
        """Every message delivered since the last drain, in order."""
        batches, self.batches = self.batches, []
        return [message for batch in batches for message in batch.messages]


def record(bus: EventBus, channel: str) -> RecordingSink:
    sink = RecordingSink()
    bus.subscribe(channel, sink)
    return sink
