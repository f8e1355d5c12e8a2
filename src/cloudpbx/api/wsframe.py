"""RFC 6455 frames, both ways, for the server side of `/ws/pbx_*`.

Server frames are never masked, so a message framed once is the same bytes for every
subscriber: the bus frames each committed message here, once, and every connection
writes that object (api/pbx_socket.py). Client frames are masked and, on this channel,
carry nothing the server acts on but control frames; `parse_frames` reads those and
skips the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

PING = b"\x89\x00"
"""FIN + opcode 9 (ping), unmasked, empty payload: the same two bytes for everyone."""
EMPTY_PONG = b"\x8a\x80"
"""FIN + opcode 10 (pong), masked, empty payload: 4 mask bytes follow, nothing else."""

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
MAX_CLIENT_FRAME = 64 * 1024
"""Clients have nothing to say on this channel; a larger frame is refused with 1009."""

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_CODE = struct.Struct("!H")


def frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked frame."""
    first = 0x80 | opcode
    size = len(payload)
    if size < 126:
        return _SHORT.pack(first, size) + payload
    if size < 65536:
        return _MEDIUM.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload


def text_frame(text: str) -> bytes:
    return frame(OP_TEXT, text.encode())


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit a control frame's 125 bytes."""
    return frame(OP_CLOSE, _CODE.pack(code) + reason.encode()[:123])


class ProtocolViolation(Exception):
    """The client broke RFC 6455; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_frames(data: bytes, on_control: Callable[[int, bytes], None]) -> bytes:
    """Consume the whole client frames at the start of `data`; return the rest.

    Data frames are dropped unread (the channel ignores them); control frames go to
    `on_control(opcode, unmasked payload)`. Raises ProtocolViolation on a frame no
    client may send.
    """
    offset = 0
    end = len(data)
    while end - offset >= 2:
        first, second = data[offset], data[offset + 1]
        if first & 0x70:
            raise ProtocolViolation(1002, "reserved bits set (no extension was agreed)")
        if not second & 0x80:
            raise ProtocolViolation(1002, "client frames must be masked")
        opcode = first & 0x0F
        size = second & 0x7F
        head = 2
        if size == 126:
            if end - offset < 4:
                break
            size = _CODE.unpack_from(data, offset + 2)[0]
            head = 4
        elif size == 127:
            if end - offset < 10:
                break
            size = struct.unpack_from("!Q", data, offset + 2)[0]
            head = 10
        if opcode >= OP_CLOSE and (size > 125 or not first & 0x80):
            raise ProtocolViolation(1002, "control frames are short and unfragmented")
        if opcode not in (OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
            raise ProtocolViolation(1002, f"unknown opcode {opcode}")
        if size > MAX_CLIENT_FRAME:
            raise ProtocolViolation(1009, "this channel takes no messages from clients")
        total = head + 4 + size
        if end - offset < total:
            break
        if opcode >= OP_CLOSE:
            mask = data[offset + head : offset + head + 4]
            start = offset + head + 4
            on_control(opcode, unmask(data[start : start + size], mask))
        offset += total
    return data[offset:]


def unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")
