"""The WebSocket side's numbers: the one place the metrics touch the fan-out.

`websocket_readings` is the adapter the sampler calls, about once a second. The fan-out
keeps plain counts where they cost least: the bus adds messages × subscribers once per
committed batch (bus/memory.py), the protocol class counts the closes it initiates by
code (api/pbx_socket.py), and the keep-alive sweep knows the open connections. Nothing
here runs per delivery.
"""

from __future__ import annotations

from cloudpbx.api.pbx_socket import CLOSE_KEEPALIVE, CLOSE_TOO_SLOW, PbxSocket
from cloudpbx.bus.memory import MemoryBus
from cloudpbx.metrics.sampler import WebSocketReadings


def websocket_readings(bus: MemoryBus, protocol: type[PbxSocket]) -> WebSocketReadings:
    """Open connections, deliveries and cut-offs (4008 too slow, 1011 no pong)."""
    closes = protocol.closes
    return WebSocketReadings(
        connections=len(protocol.keepalive),
        deliveries=bus.deliveries,
        cutoffs={code: closes.get(code, 0) for code in (CLOSE_TOO_SLOW, CLOSE_KEEPALIVE)},
    )
