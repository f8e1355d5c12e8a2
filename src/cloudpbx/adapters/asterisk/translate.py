"""AMI messages in, contract events out: the `Translator`. No I/O.

Mapping (AMI → contract):

* `DeviceStateChange` of `PJSIP/<PBX>-<ext>`, `ExtensionStatus` of a one-device hint and
  the channel events → `subscriber` (+ `connectPeerNumber/Name` while it has a call);
* `ExtensionStatus` (also inside `ExtensionStateList`) → `extstatus`, unchanged but for
  the reduction of combined values; the PBX is the one of its `Context`, never the one
  of the device the hint watches;
* `QueueCallerJoin` / `QueueCallerLeave` (`Count`), `QueueParams` (`Calls`) → `queue`;
* `QueueMemberStatus`, `QueueMemberPause` (with `m_reason`), `QueueMemberAdded`,
  `QueueMemberRemoved`, `QueueMember` (the QueueStatus listing) → `qmember`;
* `ConfbridgeJoin` / `ConfbridgeLeave`, `ConfbridgeList` (listing) → `cmember`.

Anything else (`VarSet`, `TestEvent`, `RTCP*`, `PeerStatus`, `ContactStatus`, responses, ...)
is ignored, and so is every header the mapping does not read. An event the mapping reads
whose subject no PBX owns (an endpoint, context, queue or room of no tenant) is dropped,
counted in `dropped` by AMI event name and logged at DEBUG.

The translator keeps the state it last published and publishes *changes* only, so the
startup listings (`ExtensionStateList`, `DeviceStateList`, `QueueStatus`,
`ConfbridgeList`) publish what is new and nothing twice.

State and grouping. `feed` only updates state and notes which subject it touched (a peer,
a queue, a conference member); `flush` turns each touched subject into one batch — the
events of one change, e.g. `[subscriber, extstatus, qmember]` for a phone — in the order
the subjects were first touched. A caller feeds every message it has at hand (one read
from the socket, or a few milliseconds' worth) and then flushes: the `DeviceStateChange`,
`ExtensionStatus` and `QueueMemberStatus` of one device change arrive within a
millisecond, in no fixed order, and come out together; transient states inside one
flush window (a `Hangup` before the `DeviceStateChange` that follows it) are not
published. Conference joins and leaves are events, not states: each is its own batch.

Values (decisions, see docs/asterisk.md "Events: what Asterisk says"):

* `extstatus.status`: Asterisk's `ExtensionStatus.Status`, combined bitmasks reduced with
  :func:`reduce_device_state` (In Use + Ringing → 8, In Use + On Hold → 16, removed or
  deactivated hint → 4). Nothing of ours is added to it;
* `subscriber.statusValue`: the device state, `DeviceStateChange.State` or the one-device
  hint's `Status`; `UNKNOWN` is Idle, `INVALID` Unavailable, `ONHOLD` 16 (Asterisk's own
  device → extension state mapping). 16 is therefore the device Asterisk marks ONHOLD —
  the party that was put on hold — never derived from `Hold`/`Unhold`, which are raised
  on the phone that pressed hold. The one addition is 32 Connecting, the contract's
  state Asterisk has no word for: while the device places a call the other side has not
  answered (a channel in state Ring, a dial not ended, a caller waiting in a queue; see
  :mod:`.channels`);
* `connectPeerNumber/Name`: the active call's other party (:meth:`CallTracker.party`:
  only a channel that is up or ringing, never the device itself, the call not on hold
  before a held one), present while the device is not Idle/Unavailable (a leg being set
  up on an idle phone is no call);
* when a device's last channel hangs up while its state still says In Use/Busy/Ringing/
  On Hold, its `subscriber` waits until the device state catches up (`Hangup` comes up
  to a few ms before `DeviceStateChange`), so a call ends in one change, not via a
  call-less "In Use";
* `PeerStatus` and `ContactStatus` are not used: `DeviceStateChange` reports the same
  registration changes within a millisecond, and using both would split one change;
* a device whose state is still unknown (no `DeviceStateChange` or hint seen yet) is not
  published, except as Connecting.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

from cloudpbx.adapters.asterisk.channels import UNKNOWN_IDS, CallTracker
from cloudpbx.adapters.asterisk.framing import AmiMessage
from cloudpbx.adapters.asterisk.tenancy import Peer, TenantMap
from cloudpbx.domain.events import (
    ConferenceMember,
    Event,
    ExtStatus,
    QueueCalls,
    QueueMember,
    Subscriber,
)
from cloudpbx.domain.states import DeviceState, MemberStatus, reduce_device_state

__all__ = ["DEVICE_STATES", "Batch", "Translator", "device_state", "member_status"]

log = logging.getLogger(__name__)

Batch = tuple[str, list[Event]]
"""`(pbx, events of one change)`, ready for `PbxSink.events`."""

DEVICE_STATES: dict[str, DeviceState] = {
    "UNKNOWN": DeviceState.IDLE,
    "NOT_INUSE": DeviceState.IDLE,
    "INUSE": DeviceState.IN_USE,
    "BUSY": DeviceState.BUSY,
    "INVALID": DeviceState.UNAVAILABLE,
    "UNAVAILABLE": DeviceState.UNAVAILABLE,
    "RINGING": DeviceState.RINGING,
    "RINGINUSE": DeviceState.RINGING,
    "ONHOLD": DeviceState.ON_HOLD,
}
"""`DeviceStateChange.State` → contract state (RINGINUSE is In Use + Ringing → 8)."""


def device_state(text: str) -> DeviceState | None:
    """`INUSE` → 1; None for a text Asterisk does not define."""
    return DEVICE_STATES.get(text.upper())


def member_status(text: str) -> MemberStatus:
    """`QueueMember*.Status` (Asterisk's AST_DEVICE_* number) → `m_status`."""
    try:
        return MemberStatus(int(text))
    except ValueError:
        return MemberStatus.UNKNOWN


@dataclass(slots=True, eq=False)
class _Hint:
    pbx: str
    exten: str
    device: Peer | None
    """The one device of the hint when it is an endpoint of the same PBX: its
    `subscriber` and this `extstatus` travel together."""
    status: DeviceState | None = None
    sent: DeviceState | None = None


@dataclass(slots=True, eq=False)
class _Member:
    queue: str
    status: MemberStatus = MemberStatus.UNKNOWN
    calls_taken: int = 0
    dynamic: bool = False
    paused: bool = False
    name: str = ""
    location: str = ""
    reason: str | None = None
    force: bool = False
    removed: bool = False
    sent: tuple[object, ...] | None = None


@dataclass(slots=True, eq=False)
class _Line:
    """What is known about one endpoint (a phone, a trunk)."""

    peer: Peer
    base: DeviceState | None = None
    sent: tuple[DeviceState, tuple[str, str] | None] | None = None
    hints: dict[str, _Hint] = field(default_factory=dict)
    members: dict[str, _Member] = field(default_factory=dict)
    dirty_members: dict[str, None] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Queue:
    calls: int = 0
    sent: int | None = None


_Handler = Callable[[AmiMessage], None]

_CALL_STATES = frozenset(
    {DeviceState.IN_USE, DeviceState.BUSY, DeviceState.RINGING, DeviceState.ON_HOLD}
)


class Translator:
    """Turns AMI messages into contract events per PBX; see the module docstring."""

    def __init__(self, tenants: TenantMap) -> None:
        self.tenants = tenants
        self.calls = CallTracker(tenants, on_drop=self._drop)
        self.dropped: Counter[str] = Counter()
        """AMI event name → how many of them named no PBX (see `_drop`)."""
        self._last_dropped: AmiMessage | None = None
        self._lines: dict[Peer, _Line] = {}
        self._hints: dict[tuple[str, str], _Hint] = {}
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._rooms: dict[tuple[str, str], set[str]] = {}
        self._touched: dict[Hashable, None] = {}
        self._pending: dict[int, Batch] = {}
        self._serial = 0
        self._handlers: dict[str, _Handler] = {
            "DeviceStateChange": self._device_state_change,
            "ExtensionStatus": self._extension_status,
            "Newchannel": self._new_channel,
            "Newstate": self._refresh_channel,
            "NewConnectedLine": self._refresh_channel,
            "NewCallerid": self._refresh_channel,
            "DialBegin": self._dial_begin,
            "DialEnd": self._dial_end,
            "Hangup": self._hangup,
            "CoreShowChannel": self._refresh_channel,
            "BridgeEnter": self._bridge_enter,
            "BridgeLeave": self._bridge_leave,
            "Hold": self._hold,
            "Unhold": self._unhold,
            "QueueCallerJoin": self._queue_caller_join,
            "QueueCallerLeave": self._queue_caller_leave,
            "QueueParams": self._queue_params,
            "QueueEntry": self._queue_entry,
            "QueueMemberStatus": self._member_status,
            "QueueMember": self._member_status,
            "QueueMemberPause": self._member_pause,
            "QueueMemberAdded": self._member_added,
            "QueueMemberRemoved": self._member_removed,
            "ConfbridgeJoin": self._conference_join,
            "ConfbridgeLeave": self._conference_leave,
            "ConfbridgeList": self._conference_list,
        }

    # -- public -----------------------------------------------------------------------------

    def feed(self, msg: AmiMessage) -> None:
        """Apply one message; its events come out of the next `flush`."""
        name = msg.event
        if name is None:
            return
        handler = self._handlers.get(name)
        if handler is not None:
            handler(msg)

    def flush(self) -> list[Batch]:
        """The changes since the last flush, one batch per touched subject, in order."""
        out: list[Batch] = []
        for key in self._touched:
            batch = self._batch(key)
            if batch is not None and batch[1]:
                out.append(batch)
        self._touched.clear()
        self._pending.clear()
        return out

    def translate(self, msg: AmiMessage) -> list[Batch]:
        """`feed` then `flush`: one message, its changes."""
        self.feed(msg)
        return self.flush()

    def reset_calls(self) -> None:
        """Forget live channels (after a lost connection, before the startup listing)."""
        self.calls.clear()

    def device_state(self, device: str) -> DeviceState | None:
        """What Asterisk last said of `device` (`PJSIP/MojaCentrala-101`); None: nothing."""
        peer = self.tenants.device(device)
        line = None if peer is None else self._lines.get(peer)
        return None if line is None else line.base

    def expect_originate(self, device: str, number: str) -> None:
        """Our `/dial` rings `device` for `number`: the party while it rings (Asterisk
        echoes the Originate's CallerID — cpa itself — as that leg's connected line)."""
        peer = self.tenants.device(device)
        if peer is not None:
            self.calls.expect_originate(peer, number)

    def cancel_originate(self, device: str, number: str) -> None:
        """That `/dial` was refused: no leg comes."""
        peer = self.tenants.device(device)
        if peer is not None:
            self.calls.cancel_originate(peer, number)

    def note_dropped(self, msg: AmiMessage) -> None:
        """Another consumer (the CDR converter) found no PBX for `msg`: count it here."""
        self._drop(msg)

    def _drop(self, msg: AmiMessage) -> None:
        """`msg` names an endpoint, context, queue or room of no PBX: count it, once."""
        if msg is self._last_dropped:
            return
        self._last_dropped = msg
        name = msg.event or "?"
        self.dropped[name] += 1
        log.debug("dropped %s: it names no PBX of this server", name)

    # -- devices and hints --------------------------------------------------------------------

    def _line(self, peer: Peer) -> _Line:
        line = self._lines.get(peer)
        if line is None:
            line = self._lines[peer] = _Line(peer)
        return line

    def _touch_peer(self, peer: Peer | None) -> None:
        if peer is not None:
            self._touched[("line", peer)] = None

    def _touch_peers(self, peers: list[Peer]) -> None:
        for peer in peers:
            self._touched[("line", peer)] = None

    def _device_state_change(self, msg: AmiMessage) -> None:
        device = msg.value("Device")
        peer = self.tenants.device(device)
        if peer is None:
            if self.tenants.is_endpoint(device):
                self._drop(msg)
            return
        state = device_state(msg.value("State"))
        if state is None:
            return
        self._line(peer).base = state
        self._touch_peer(peer)

    def _extension_status(self, msg: AmiMessage) -> None:
        exten = msg.value("Exten")
        try:
            bits = int(msg.value("Status"))
        except ValueError:
            return
        if not exten:
            return
        pbx = self.tenants.context(msg.value("Context"))
        if pbx is None:
            self._drop(msg)
            return
        device = self._hint_device(pbx, msg.value("Hint"))
        key = (pbx, exten)
        hint = self._hints.get(key)
        if hint is None or hint.device != device:
            if hint is not None and hint.device is not None:
                self._line(hint.device).hints.pop(exten, None)
            sent = None if hint is None else hint.sent
            hint = self._hints[key] = _Hint(pbx, exten, device, sent=sent)
            if device is not None:
                self._line(device).hints[exten] = hint
        hint.status = reduce_device_state(bits)
        if device is not None:
            if bits >= 0:
                self._line(device).base = hint.status
            self._touched[("line", device)] = None
        else:
            self._touched[("hint", pbx, exten)] = None

    def _hint_device(self, pbx: str, hint: str) -> Peer | None:
        """The one endpoint of `pbx` a hint watches (`PJSIP/MojaCentrala-101`), else None.

        A hint of several devices (`PJSIP/A&PJSIP/B`), of no endpoint (`Custom:x`) or of
        another PBX's endpoint (a context of PBX B watching A's phone) is published as an
        `extstatus` of its context's PBX only: it says nothing of one device of that PBX.
        """
        devices = hint.split(",", 1)[0].split("&")
        if len(devices) != 1:
            return None
        peer = self.tenants.device(devices[0])
        return peer if peer is not None and peer.pbx == pbx else None

    def _derive(self, peer: Peer, base: DeviceState | None) -> DeviceState | None:
        """The device state, or 32 while the device places an unanswered call."""
        if self.calls.connecting(peer):
            return DeviceState.CONNECTING
        return base

    def _line_events(self, line: _Line) -> list[Event]:
        events: list[Event] = []
        subscriber = self._subscriber_event(line)
        if subscriber is not None:
            events.append(subscriber)
        for hint in line.hints.values():
            ext = self._hint_event(hint)
            if ext is not None:
                events.append(ext)
        events.extend(self._member_events(line))
        return events

    def _subscriber_event(self, line: _Line) -> Subscriber | None:
        peer = line.peer
        party = self.calls.party(peer)
        if (
            party is None
            and line.base in _CALL_STATES
            and line.sent is not None
            and line.sent[1] is not None
        ):
            # The call's last channel is gone, the device state saying so is still on its
            # way (`Hangup` comes up to a few ms before `DeviceStateChange`): publish the
            # end of the call once, when the state arrives, not a call-less "In Use".
            return None
        state = self._derive(peer, line.base)
        if state is None:
            return None
        if state is DeviceState.IDLE or state is DeviceState.UNAVAILABLE:
            # A channel being set up on an idle phone is no call yet.
            party = None
        current = (state, party)
        if current == line.sent:
            return None
        line.sent = current
        return Subscriber(
            peer.name,
            state,
            connect_peer_number=None if party is None else party[0],
            connect_peer_name=None if party is None else party[1],
        )

    def _member_events(self, line: _Line) -> list[Event]:
        events: list[Event] = []
        for queue in line.dirty_members:
            member = line.members.get(queue)
            if member is not None:
                qmember = self._member_event(line, member)
                if qmember is not None:
                    events.append(qmember)
        line.dirty_members.clear()
        return events

    def _hint_event(self, hint: _Hint) -> ExtStatus | None:
        """Asterisk's extension state as it said it, when it changed."""
        state = hint.status
        if state is None or state == hint.sent:
            return None
        hint.sent = state
        return ExtStatus(hint.exten, state)

    # -- channels ------------------------------------------------------------------------------

    def _new_channel(self, msg: AmiMessage) -> None:
        self._touch_peer(self.calls.new_channel(msg))

    def _refresh_channel(self, msg: AmiMessage) -> None:
        self._touch_peer(self.calls.refresh(msg))

    def _dial_begin(self, msg: AmiMessage) -> None:
        self._touch_peers(self.calls.dial_begin(msg))

    def _dial_end(self, msg: AmiMessage) -> None:
        self._touch_peers(self.calls.dial_end(msg))

    def _bridge_enter(self, msg: AmiMessage) -> None:
        self._touch_peers(self.calls.bridge_enter(msg))

    def _bridge_leave(self, msg: AmiMessage) -> None:
        self._touch_peers(self.calls.bridge_leave(msg))

    def _hangup(self, msg: AmiMessage) -> None:
        self._touch_peer(self.calls.hangup(msg))

    # Which call is active, never a state: see the module docstring.
    def _hold(self, msg: AmiMessage) -> None:
        self._touch_peers(self.calls.set_holding(msg, True))

    def _unhold(self, msg: AmiMessage) -> None:
        self._touch_peers(self.calls.set_holding(msg, False))

    # -- queues --------------------------------------------------------------------------------

    def _queue_count(self, msg: AmiMessage, queue: str, count: str) -> None:
        if not count.isdigit():
            return
        pbx = self.tenants.queue(queue)
        if pbx is None:
            self._drop(msg)
            return
        key = (pbx, queue)
        state = self._queues.get(key)
        if state is None:
            state = self._queues[key] = _Queue()
        state.calls = int(count)
        self._touched[("queue", pbx, queue)] = None

    def _queue_caller_join(self, msg: AmiMessage) -> None:
        self._queue_count(msg, msg.value("Queue"), msg.value("Count"))
        self._touch_peer(self.calls.set_queued(msg, True))

    def _queue_caller_leave(self, msg: AmiMessage) -> None:
        self._queue_count(msg, msg.value("Queue"), msg.value("Count"))
        self._touch_peer(self.calls.set_queued(msg, False))

    def _queue_params(self, msg: AmiMessage) -> None:
        self._queue_count(msg, msg.value("Queue"), msg.value("Calls"))

    def _queue_entry(self, msg: AmiMessage) -> None:
        self._touch_peer(self.calls.mark_queued(msg.value("Uniqueid")))

    def _member(self, msg: AmiMessage) -> tuple[_Line, _Member] | None:
        """The member a `QueueMember*` event describes, updated from it.

        Its PBX is the queue's owner; a member whose endpoint belongs to another PBX is
        dropped. A queue no rule names belongs to the PBX of the member's endpoint.
        """
        queue = msg.value("Queue")
        interface = msg.value("Interface") or msg.value("Location")
        state_interface = msg.value("StateInterface")
        peer = None
        if state_interface:
            peer = self.tenants.interface(state_interface)
        if peer is None and interface:
            peer = self.tenants.interface(interface)
        if not queue:
            return None
        owner = self.tenants.queue(queue)
        if peer is None or (owner is not None and owner != peer.pbx):
            self._drop(msg)
            return None
        line = self._line(peer)
        member = line.members.get(queue)
        if member is None:
            member = line.members[queue] = _Member(queue)
        member.status = member_status(msg.value("Status"))
        calls_taken = msg.value("CallsTaken")
        member.calls_taken = int(calls_taken) if calls_taken.isdigit() else 0
        member.dynamic = msg.value("Membership").lower() == "dynamic"
        member.paused = msg.value("Paused") == "1"
        member.name = msg.value("MemberName") or msg.value("Name")
        member.location = interface
        member.removed = False
        line.dirty_members[queue] = None
        self._touched[("line", peer)] = None
        return line, member

    def _member_status(self, msg: AmiMessage) -> None:
        self._member(msg)

    def _member_pause(self, msg: AmiMessage) -> None:
        found = self._member(msg)
        if found is not None:
            member = found[1]
            member.reason = msg.value("PausedReason")
            member.force = True

    def _member_added(self, msg: AmiMessage) -> None:
        found = self._member(msg)
        if found is not None:
            found[1].force = True

    def _member_removed(self, msg: AmiMessage) -> None:
        found = self._member(msg)
        if found is not None:
            found[1].force = True
            found[1].removed = True

    def _member_event(self, line: _Line, member: _Member) -> QueueMember | None:
        current = (
            member.status,
            member.calls_taken,
            member.dynamic,
            member.paused,
            member.name,
            member.location,
        )
        reason = member.reason
        force = member.force
        member.reason = None
        member.force = False
        if member.removed:
            del line.members[member.queue]
        if current == member.sent and not force:
            return None
        member.sent = current
        return QueueMember(
            peer=line.peer.name,
            queue=member.queue,
            status=member.status,
            calls_taken=member.calls_taken,
            dynamic=member.dynamic,
            paused=member.paused,
            name=member.name,
            location=member.location,
            reason=reason,
        )

    # -- conferences ---------------------------------------------------------------------------

    def _conference(
        self, msg: AmiMessage, action: Literal["add", "remove"], *, listing: bool = False
    ) -> None:
        conference = msg.value("Conference")
        channel = msg.value("Channel")
        if not conference or not channel:
            return
        owner = self.tenants.conference(conference)
        member = self.tenants.channel(channel)
        if owner is not None and member is not None and owner != member.pbx:
            self._drop(msg)
            return
        pbx = owner if owner is not None else None if member is None else member.pbx
        if pbx is None:
            self._drop(msg)
            return
        room = self._rooms.setdefault((pbx, conference), set())
        if action == "add":
            if listing and channel in room:
                return
            room.add(channel)
        else:
            room.discard(channel)
            if not room:
                del self._rooms[(pbx, conference)]
        name = msg.value("CallerIDName")
        number = msg.value("CallerIDNum")
        event = ConferenceMember(
            channel=channel,
            action=action,
            conference=conference,
            caller_id_name="" if name in UNKNOWN_IDS else name,
            caller_id_num="" if number in UNKNOWN_IDS else number,
        )
        self._serial += 1
        self._pending[self._serial] = (pbx, [event])
        self._touched[("event", self._serial)] = None

    def _conference_join(self, msg: AmiMessage) -> None:
        self._conference(msg, "add")

    def _conference_leave(self, msg: AmiMessage) -> None:
        self._conference(msg, "remove")

    def _conference_list(self, msg: AmiMessage) -> None:
        self._conference(msg, "add", listing=True)

    # -- flushing ------------------------------------------------------------------------------

    def _batch(self, key: Hashable) -> Batch | None:
        assert isinstance(key, tuple)
        kind = key[0]
        if kind == "line":
            peer: Peer = key[1]
            return peer.pbx, self._line_events(self._line(peer))
        if kind == "event":
            return self._pending.get(key[1])
        if kind == "queue":
            state = self._queues.get((key[1], key[2]))
            if state is None or state.calls == state.sent:
                return None
            state.sent = state.calls
            return key[1], [QueueCalls(key[2], state.calls)]
        if kind == "hint":
            hint = self._hints.get((key[1], key[2]))
            event = None if hint is None else self._hint_event(hint)
            return None if event is None else (key[1], [event])
        return None
