"""Call state the contract needs and Asterisk's device states do not carry. No I/O.

Asterisk reports a device as `INUSE` from the moment it has a channel; the contract also
wants `32` (Connecting: the device placed a call the other side has not answered yet) and
the connected party of a call (`connectPeerNumber/Name`). Both are read from the channels
of the device, tracked by uniqueid from the channel events:

* `Newchannel` / `Hangup` — a channel of a known endpoint exists / is gone;
* `Newstate`, `NewConnectedLine`, `NewCallerid` — its state and connected line;
* `DialBegin` / `DialEnd` — who dials whom (`Channel` dials `DestChannel`); a `DialBegin`
  without `Channel` is an Originate ringing its first leg: nobody dials, the leg rings;
* `QueueCallerJoin` / `QueueCallerLeave` — a caller waiting in a queue;
* `Hold` / `Unhold` — the phone put its call on hold;
* `CoreShowChannel` (the startup listing) — channels already up.

A device is *connecting* while one of its channels is in state `Ring` (4: the phone
dialled and nothing answered it yet), is the calling side of a dial that has not ended,
or waits in a queue. Only events published on the channel's own topic update its state
and connected line: the snapshots inside `DialBegin`/`DialEnd`/`BridgeEnter` may be older
than a `Newstate` already received (seen in the lab: a `DialBegin` carrying `Down` after
`Newstate Ringing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudpbx.adapters.asterisk.framing import AmiMessage
from cloudpbx.adapters.asterisk.tenancy import Peer, TenantMap

__all__ = ["CallTracker", "Channel"]

RING = 4
"""`ChannelState` Ring: an incoming channel (from a phone) not answered yet."""

UNKNOWN_IDS = frozenset({"", "<unknown>", "unknown"})
"""How AMI spells an unknown caller id (`unknown` only in `QueueEntry`)."""


@dataclass(slots=True, eq=False)
class Channel:
    """One live channel of a known endpoint."""

    uniqueid: str
    name: str
    peer: Peer
    linkedid: str
    state: int = 0
    connected_num: str = ""
    connected_name: str = ""
    dialled: str | None = None
    """The number the phone dialled (the `Exten` of a channel created in state Ring)."""
    dialling: set[str] = field(default_factory=set)
    """Uniqueids of the legs this channel dials that have not answered or ended."""
    dial_parent: str | None = None
    queued: bool = False
    held: bool = False

    @property
    def connecting(self) -> bool:
        return self.state == RING or bool(self.dialling) or self.queued


class CallTracker:
    """Live channels of known endpoints, by uniqueid and by peer.

    Every update method returns the peers whose call state may have changed (callers
    re-derive what they publish from `connecting`, `held` and `party`).
    """

    def __init__(self, tenants: TenantMap) -> None:
        self._tenants = tenants
        self.channels: dict[str, Channel] = {}
        self._by_peer: dict[Peer, dict[str, Channel]] = {}

    # -- queries --------------------------------------------------------------------------

    def connecting(self, peer: Peer) -> bool:
        """The device placed a call that the other side has not answered yet."""
        channels = self._by_peer.get(peer)
        return channels is not None and any(ch.connecting for ch in channels.values())

    def held(self, peer: Peer) -> bool:
        channels = self._by_peer.get(peer)
        return channels is not None and any(ch.held for ch in channels.values())

    def party(self, peer: Peer) -> tuple[str, str] | None:
        """(number, name) of the other party of the device's latest call; None: no call.

        The connected line when Asterisk knows it, else the number the phone dialled.
        """
        channels = self._by_peer.get(peer)
        if not channels:
            return None
        channel = next(reversed(channels.values()))
        number = channel.connected_num
        if number in UNKNOWN_IDS:
            number = channel.dialled or ""
        name = channel.connected_name
        if name in UNKNOWN_IDS:
            name = ""
        return number, name

    def peer_channels(self, peer: Peer) -> list[Channel]:
        return list(self._by_peer.get(peer, {}).values())

    # -- updates ---------------------------------------------------------------------------

    def new_channel(self, msg: AmiMessage) -> Peer | None:
        channel = self._upsert(msg, "", current=True)
        if channel is None:
            return None
        if channel.state == RING and channel.dialled is None:
            channel.dialled = msg.value("Exten") or None
        return channel.peer

    def refresh(self, msg: AmiMessage) -> Peer | None:
        """A single-channel event (`Newstate`, `NewConnectedLine`, `CoreShowChannel`...)."""
        channel = self._upsert(msg, "", current=True)
        return None if channel is None else channel.peer

    def dial_begin(self, msg: AmiMessage) -> list[Peer]:
        caller = self._upsert(msg, "", current=False) if "Uniqueid" in msg else None
        dest = self._upsert(msg, "Dest", current=False)
        dest_id = msg.value("DestUniqueid")
        if caller is not None and dest_id:
            caller.dialling.add(dest_id)
            if dest is not None:
                dest.dial_parent = caller.uniqueid
        return _peers(caller, dest)

    def dial_end(self, msg: AmiMessage) -> list[Peer]:
        caller = self._upsert(msg, "", current=False) if "Uniqueid" in msg else None
        dest = self._upsert(msg, "Dest", current=False)
        if caller is not None:
            caller.dialling.discard(msg.value("DestUniqueid"))
        if dest is not None:
            dest.dial_parent = None
        return _peers(caller, dest)

    def set_queued(self, msg: AmiMessage, queued: bool) -> Peer | None:
        channel = self._upsert(msg, "", current=True)
        if channel is None:
            return None
        channel.queued = queued
        return channel.peer

    def mark_queued(self, uniqueid: str) -> Peer | None:
        """A `QueueEntry` of the startup listing: that channel waits in a queue."""
        channel = self.channels.get(uniqueid)
        if channel is None:
            return None
        channel.queued = True
        return channel.peer

    def set_held(self, msg: AmiMessage, held: bool) -> Peer | None:
        channel = self._upsert(msg, "", current=True)
        if channel is None:
            return None
        channel.held = held
        return channel.peer

    def hangup(self, msg: AmiMessage) -> Peer | None:
        channel = self.channels.pop(msg.value("Uniqueid"), None)
        if channel is None:
            return None
        peer_channels = self._by_peer.get(channel.peer)
        if peer_channels is not None:
            peer_channels.pop(channel.uniqueid, None)
            if not peer_channels:
                del self._by_peer[channel.peer]
        if channel.dial_parent is not None:
            parent = self.channels.get(channel.dial_parent)
            if parent is not None:
                parent.dialling.discard(channel.uniqueid)
        return channel.peer

    def clear(self) -> None:
        """Forget every channel (the AMI connection was lost; resync follows)."""
        self.channels.clear()
        self._by_peer.clear()

    # -- internals -------------------------------------------------------------------------

    def _upsert(self, msg: AmiMessage, prefix: str, *, current: bool) -> Channel | None:
        """The channel a snapshot describes, created when unknown.

        `current`: the snapshot is from the channel's own topic, so it is the latest and
        may update state and connected line.
        """
        uniqueid = msg.value(prefix + "Uniqueid")
        if not uniqueid:
            return None
        channel = self.channels.get(uniqueid)
        if channel is None:
            name = msg.value(prefix + "Channel")
            peer = self._tenants.channel(name) if name else None
            if peer is None:
                return None
            channel = Channel(uniqueid, name, peer, msg.value(prefix + "Linkedid"))
            self.channels[uniqueid] = channel
            self._by_peer.setdefault(peer, {})[uniqueid] = channel
            current = True
        if current:
            state = msg.value(prefix + "ChannelState")
            if state.isdigit():
                channel.state = int(state)
            channel.connected_num = msg.value(prefix + "ConnectedLineNum")
            channel.connected_name = msg.value(prefix + "ConnectedLineName")
        return channel


def _peers(*channels: Channel | None) -> list[Peer]:
    return [channel.peer for channel in channels if channel is not None]
