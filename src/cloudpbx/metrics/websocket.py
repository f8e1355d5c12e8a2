"""The WebSocket side's numbers: the one place the metrics touch the fan-out.

`websocket_readings` is the adapter the sampler calls. Today's fan-out (bus/memory.py,
api/ws.py, api/keepalive.py) keeps no delivery or cut-off counts of its own, so two thin
subclasses count them where it costs least: the bus per published message (deliveries
are the message times the channel's subscribers, and a subscriber detached because it
overflowed is a 4008), the keep-alive protocol per timed-out connection (1011). The
open connections are the keep-alive's own count. None of this runs per delivery.
"""

from __future__ import annotations

from cloudpbx.api.keepalive import KeepAliveWSProtocol
from cloudpbx.bus.memory import MemoryBus, MemorySubscription
from cloudpbx.metrics.sampler import WebSocketReadings
from cloudpbx.ports.bus import WireMessage


class CountingBus(MemoryBus):
    """The in-process bus, counting deliveries and overflowed subscribers."""

    def __init__(self) -> None:
        super().__init__()
        self.deliveries = 0
        self.overflows = 0

    def publish_nowait(self, channel: str, message: WireMessage) -> None:
        self.deliveries += self.subscriber_count(channel)
        super().publish_nowait(channel, message)

    def detach(self, channel: str, subscription: MemorySubscription) -> None:
        before = self.subscriber_count(channel)
        super().detach(channel, subscription)
        # An overflowed subscription detaches itself once, the moment it overflows; its
        # connection is then closed with 4008 (api/ws.py). A later close finds it gone.
        if subscription.overflowed and self.subscriber_count(channel) < before:
            self.overflows += 1


def counting_timeouts(protocol: type[KeepAliveWSProtocol]) -> type[KeepAliveWSProtocol]:
    """`protocol`, counting the connections its keep-alive closes with 1011."""

    class TimeoutCounting(protocol):  # type: ignore[valid-type, misc]
        timeouts = 0

        def keepalive_expired(self, now: float) -> None:
            TimeoutCounting.timeouts += 1
            super().keepalive_expired(now)

    return TimeoutCounting


def websocket_readings(bus: CountingBus, protocol: type[KeepAliveWSProtocol]) -> WebSocketReadings:
    """Open connections, deliveries and cut-offs (4008, 1011) of this process."""
    timeouts: int = getattr(protocol, "timeouts", 0)
    return WebSocketReadings(
        connections=len(protocol.keepalive),
        deliveries=bus.deliveries,
        cutoffs={4008: bus.overflows, 1011: timeouts},
    )
