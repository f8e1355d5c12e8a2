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
* `BridgeEnter` / `BridgeLeave` (and `BridgeId` of `CoreShowChannel`) — who talks to whom;
* `Hold` / `Unhold` — raised on the channel whose phone *pressed* hold. They never make a
  state (Asterisk's device state says ONHOLD where it applies, on the held party); they
  only tell which of a phone's calls is the active one;
* `CoreShowChannel` (the startup listing) — channels already up.

A device is *connecting* while one of its channels is in state `Ring` (4: the phone
dialled and nothing answered it yet), is the calling side of a dial that has not ended,
or waits in a queue. Only events published on the channel's own topic update its state
and connected line: the snapshots inside `DialBegin`/`DialEnd`/`BridgeEnter` may be older
than a `Newstate` already received (seen in the lab: a `DialBegin` carrying `Down` after
`Newstate Ringing`).

The connected party (`party`) comes only from a channel that is really up or ringing
(`Ring`, `Ringing`, `Up`: never `Down`, e.g. a leg the callee rejects with 486 before it
ever rang) and names someone other than the device itself: Asterisk echoes an
Originate's `CallerID` (`"MojaCentrala 101" <101>`) as the first leg's connected line,
so while cpa rings for a `/dial` its party is the number being called (`expect_originate`).
With several calls the active one wins: the latest channel that is not on hold (neither
this phone nor the other side of its bridge pressed hold); only when all are held, the
latest held one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cloudpbx.adapters.asterisk.framing import AmiMessage
from cloudpbx.adapters.asterisk.tenancy import Peer, TenantMap

__all__ = ["CallTracker", "Channel"]

DOWN = 0
RING = 4
"""`ChannelState` Ring: an incoming channel (from a phone) not answered yet."""
RINGING = 5
UP = 6
_TALKING = frozenset({RING, RINGING, UP})
"""Channel states whose connected line is a real party (never Down, Busy, ...)."""
_ORIGINATES_KEPT = 4
"""Per device: `/dial`s whose first leg has not appeared yet (a bound, not a limit seen)."""

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
    """The number this call is for: what the phone dialled (the `Exten` of a channel
    created in state Ring), or the `cpb` of our `/dial` that created it."""
    dialling: set[str] = field(default_factory=set)
    """Uniqueids of the legs this channel dials that have not answered or ended."""
    dial_parent: str | None = None
    queued: bool = False

    @property
    def connecting(self) -> bool:
        return self.state == RING or bool(self.dialling) or self.queued

    def party(self) -> tuple[str, str] | None:
        """(number, name) of the other side, or None: not up/ringing, or only itself."""
        if self.state not in _TALKING:
            return None
        number, name = self.connected_num, self.connected_name
        if number == self.peer.extension:
            # Asterisk echoed our own caller id: the party is whom we call, if known.
            if not self.dialled or self.dialled == number:
                return None
            return self.dialled, ""
        if number in UNKNOWN_IDS:
            number, name = self.dialled or "", ""
        return number, "" if name in UNKNOWN_IDS else name


class CallTracker:
    """Live channels of known endpoints, by uniqueid and by peer; bridges and holds of all.

    Every update method returns the peers whose call state may have changed (callers
    re-derive what they publish from `connecting` and `party`). `on_drop` is told of a
    channel event of an endpoint no PBX owns.
    """

    def __init__(
        self, tenants: TenantMap, on_drop: Callable[[AmiMessage], None] | None = None
    ) -> None:
        self._tenants = tenants
        self._on_drop = on_drop
        self.channels: dict[str, Channel] = {}
        self._by_peer: dict[Peer, dict[str, Channel]] = {}
        self._expected: dict[Peer, deque[str]] = {}
        self._bridge_of: dict[str, str] = {}
        self._bridges: dict[str, set[str]] = {}
        self._holding: set[str] = set()
        """Uniqueids of channels (of any tenant) whose phone pressed hold."""

    # -- queries --------------------------------------------------------------------------

    def connecting(self, peer: Peer) -> bool:
        """The device placed a call that the other side has not answered yet."""
        channels = self._by_peer.get(peer)
        return channels is not None and any(ch.connecting for ch in channels.values())

    def on_hold(self, channel: Channel) -> bool:
        """This phone or the other side of the channel's bridge pressed hold."""
        if channel.uniqueid in self._holding:
            return True
        bridge = self._bridge_of.get(channel.uniqueid)
        return bridge is not None and not self._holding.isdisjoint(self._bridges[bridge])

    def party(self, peer: Peer) -> tuple[str, str] | None:
        """(number, name) of the other party of the device's active call; None: no call.

        See the module docstring for which channel that is.
        """
        channels = self._by_peer.get(peer)
        if not channels:
            return None
        held = None
        for channel in reversed(channels.values()):
            party = channel.party()
            if party is None:
                continue
            if not self.on_hold(channel):
                return party
            if held is None:
                held = party
        return held

    # -- updates ---------------------------------------------------------------------------

    def expect_originate(self, peer: Peer, number: str) -> None:
        """Our `/dial` will ring `peer` for `number`: its next new leg is for `number`."""
        pending = self._expected.setdefault(peer, deque(maxlen=_ORIGINATES_KEPT))
        pending.append(number)

    def cancel_originate(self, peer: Peer, number: str) -> None:
        """That `/dial` was refused: no leg will come."""
        pending = self._expected.get(peer)
        if pending is not None and number in pending:
            pending.remove(number)
            if not pending:
                del self._expected[peer]

    def new_channel(self, msg: AmiMessage) -> Peer | None:
        channel = self._upsert(msg, "", current=True)
        if channel is None:
            return None
        if channel.state == RING and channel.dialled is None:
            channel.dialled = msg.value("Exten") or None
        elif channel.state == DOWN:
            pending = self._expected.get(channel.peer)
            if pending:
                channel.dialled = pending.popleft()
                if not pending:
                    del self._expected[channel.peer]
        return channel.peer

    def refresh(self, msg: AmiMessage) -> Peer | None:
        """A single-channel event (`Newstate`, `NewConnectedLine`, `CoreShowChannel`...)."""
        bridge = msg.value("BridgeId")
        if bridge:
            self._enter(msg.value("Uniqueid"), bridge)
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

    def bridge_enter(self, msg: AmiMessage) -> list[Peer]:
        uniqueid = msg.value("Uniqueid")
        self._enter(uniqueid, msg.value("BridgeUniqueid"))
        self._upsert(msg, "", current=False)
        return self._bridge_peers(uniqueid, only_held=True)

    def bridge_leave(self, msg: AmiMessage) -> list[Peer]:
        uniqueid = msg.value("Uniqueid")
        touched = self._bridge_peers(uniqueid, only_held=True)
        self._leave(uniqueid)
        return touched

    def set_holding(self, msg: AmiMessage, holding: bool) -> list[Peer]:
        """`Hold`/`Unhold` on the channel whose phone pressed it (any tenant)."""
        uniqueid = msg.value("Uniqueid")
        if not uniqueid:
            return []
        if holding:
            self._holding.add(uniqueid)
        else:
            self._holding.discard(uniqueid)
        self._upsert(msg, "", current=True)
        return self._bridge_peers(uniqueid)

    def hangup(self, msg: AmiMessage) -> Peer | None:
        uniqueid = msg.value("Uniqueid")
        self._leave(uniqueid)
        self._holding.discard(uniqueid)
        channel = self.channels.pop(uniqueid, None)
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
        self._bridge_of.clear()
        self._bridges.clear()
        self._holding.clear()

    # -- internals -------------------------------------------------------------------------

    def _enter(self, uniqueid: str, bridge: str) -> None:
        if not uniqueid or not bridge:
            return
        self._leave(uniqueid)
        self._bridge_of[uniqueid] = bridge
        self._bridges.setdefault(bridge, set()).add(uniqueid)

    def _leave(self, uniqueid: str) -> None:
        bridge = self._bridge_of.pop(uniqueid, None)
        if bridge is None:
            return
        members = self._bridges[bridge]
        members.discard(uniqueid)
        if not members:
            del self._bridges[bridge]

    def _bridge_peers(self, uniqueid: str, *, only_held: bool = False) -> list[Peer]:
        """The peer of `uniqueid`'s channel, then those of the others in its bridge, in a
        fixed order. `only_held`: none unless someone there pressed hold, the one thing
        that makes a bridge matter to what is published."""
        bridge = self._bridge_of.get(uniqueid)
        members = self._bridges[bridge] if bridge is not None else {uniqueid}
        if only_held and self._holding.isdisjoint(members):
            return []
        others = sorted(members - {uniqueid})
        return _peers(*(self.channels.get(one) for one in (uniqueid, *others)))

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
                if self._on_drop is not None and self._tenants.is_endpoint(name):
                    self._on_drop(msg)
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
    peers: dict[Peer, None] = {}
    for channel in channels:
        if channel is not None:
            peers[channel.peer] = None
    return list(peers)
