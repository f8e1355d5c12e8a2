"""In-process event bus: one server process, subscribers are synchronous sinks.

A committed batch is encoded once (`frame`, the WebSocket framing the composition root
passes in) and the same bytes go to every subscriber of the channel in one pass: no
task, future or queue per subscriber per message, so a delivery costs one
`transport.write` of a shared object. A sink never makes the publisher wait; one that
falls behind cuts itself off (api/pbx_socket.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cloudpbx.ports.bus import FramedBatch, Sink, WireMessage


class MemoryBus:
    """Channel name → the sinks subscribed to it, all in this process."""

    def __init__(self, frame: Callable[[str], bytes]) -> None:
        self._frame = frame
        self._channels: dict[str, dict[Sink, None]] = {}
        self.framed = 0
        """Messages encoded so far: once each, whatever the number of subscribers."""
        self.deliveries = 0
        """Messages handed to subscribers so far (messages × subscribers, per batch)."""

    def publish_batch(self, channel: str, messages: Sequence[WireMessage]) -> None:
        sinks = self._channels.get(channel)
        if not sinks or not messages:
            return
        if len(messages) == 1:  # one message: with one client per PBX, every message
            joined = self._frame(messages[0].data)
            batch = FramedBatch(messages, (joined,), joined)
        else:
            frames = [self._frame(message.data) for message in messages]
            batch = FramedBatch(messages, frames, b"".join(frames))
        self.framed += len(messages)
        self.deliveries += len(messages) * len(sinks)
        # A copy: a sink may unsubscribe (cut itself off) while we go round.
        for sink in tuple(sinks):
            sink.deliver(batch)

    def cut_off(self, channel: str) -> None:
        for sink in tuple(self._channels.get(channel, ())):  # each one leaves
            sink.missed()

    def subscribe(self, channel: str, sink: Sink) -> None:
        self._channels.setdefault(channel, {})[sink] = None

    def unsubscribe(self, channel: str, sink: Sink) -> None:
        sinks = self._channels.get(channel)
        if sinks is not None:
            sinks.pop(sink, None)
            if not sinks:
                del self._channels[channel]

    def subscriber_count(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for sinks in channels.values():
            for sink in sinks:
                sink.bus_closed()
