"""The living state of a simulated PBX, and the contract events each change produces.

Every mutator returns the events of that one change, in the order a client should apply
them (`subscriber`, `extstatus`, then a `qmember` per queue the phone is an agent in), and
returns nothing when nothing visible changed, as Asterisk only reports real changes.

Ownership rule that keeps concurrent scripts consistent: a script may only take a phone
that is `free` (registered, no do-not-disturb, idle); once it has moved the phone off
idle it owns it until it puts it back to idle. Presence scripts pick free phones too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cloudpbx.adapters.simulator.model import Agent, Extension, PbxConfig, QueueConfig
from cloudpbx.domain.events import (
    ConferenceMember,
    Event,
    ExtStatus,
    QueueCalls,
    QueueMember,
    Subscriber,
    peer_name,
)
from cloudpbx.domain.states import DeviceState, MemberStatus, extension_status

_MEMBER_STATUS = {
    DeviceState.IDLE: MemberStatus.IDLE,
    DeviceState.IN_USE: MemberStatus.IN_USE,
    DeviceState.CONNECTING: MemberStatus.IN_USE,
    DeviceState.BUSY: MemberStatus.BUSY,
    DeviceState.UNAVAILABLE: MemberStatus.UNAVAILABLE,
    DeviceState.RINGING: MemberStatus.RINGING,
    DeviceState.ON_HOLD: MemberStatus.ON_HOLD,
}


@dataclass(slots=True)
class Phone:
    """One extension's phone. `call_state` is what its (single) call is doing."""

    extension: Extension
    registered: bool = True
    dnd: bool = False
    call_state: DeviceState = DeviceState.IDLE
    peer: tuple[str, str] | None = None

    @property
    def number(self) -> str:
        return self.extension.number

    @property
    def device_state(self) -> DeviceState:
        """The contract state: unregistered is 4, do-not-disturb while idle is 2 Busy."""
        if not self.registered:
            return DeviceState.UNAVAILABLE
        if self.dnd and self.call_state is DeviceState.IDLE:
            return DeviceState.BUSY
        return self.call_state

    @property
    def free(self) -> bool:
        """Can take a new call (one call per phone, like `call_max_calls 1`)."""
        return self.registered and not self.dnd and self.call_state is DeviceState.IDLE


@dataclass(slots=True)
class Membership:
    """An agent's membership in one queue."""

    queue: QueueConfig
    agent: Agent
    paused: bool = False
    calls_taken: int = 0


@dataclass(frozen=True, slots=True)
class Participant:
    """Somebody in the conference room."""

    name: str
    number: str


class PbxState:
    """Phones, queue members, waiting callers and the conference room of one PBX."""

    def __init__(self, config: PbxConfig) -> None:
        self.config = config
        self.phones = {e.number: Phone(e) for e in config.extensions}
        self.memberships: dict[str, list[Membership]] = {}
        for queue in config.queues:
            for agent in queue.agents:
                self.memberships.setdefault(agent.extension, []).append(Membership(queue, agent))
        self.waiting = {q.name: 0 for q in config.queues}
        self.room: dict[str, Participant] = {}
        self._rotation = {q.name: 0 for q in config.queues}

    # -- phones ----------------------------------------------------------------------------

    def free_staff_phones(self) -> list[Phone]:
        """Phones the office's own traffic may take now (free, not `/dial`-only), in
        extension order."""
        dial_only = self.config.dial_only
        return [p for p in self.phones.values() if p.free and p.number not in dial_only]

    def set_call_state(
        self, phone: Phone, state: DeviceState, peer: tuple[str, str] | None = None
    ) -> list[Event]:
        """Move a phone's call to `state`; `peer` (number, name) is the other party."""
        before = (phone.device_state, phone.peer)
        phone.call_state = state
        phone.peer = None if state is DeviceState.IDLE else peer
        return self._phone_events(phone, before)

    def set_registered(self, phone: Phone, registered: bool) -> list[Event]:
        before = (phone.device_state, phone.peer)
        phone.registered = registered
        return self._phone_events(phone, before)

    def set_dnd(self, phone: Phone, dnd: bool) -> list[Event]:
        before = (phone.device_state, phone.peer)
        phone.dnd = dnd
        return self._phone_events(phone, before)

    def complete_agent_call(self, phone: Phone, queue: QueueConfig) -> None:
        """Count a finished queue call (Asterisk bumps CallsTaken when the call completes)."""
        for membership in self.memberships.get(phone.number, ()):
            if membership.queue is queue:
                membership.calls_taken += 1

    def _phone_events(
        self, phone: Phone, before: tuple[DeviceState, tuple[str, str] | None]
    ) -> list[Event]:
        if (phone.device_state, phone.peer) == before:
            return []
        status = extension_status(phone.device_state)
        # Asterisk sends an ExtensionStatus only when the extension's state changes.
        extstatus = (
            [ExtStatus(phone.number, status)] if status != extension_status(before[0]) else []
        )
        return [
            self._subscriber(phone),
            *extstatus,
            *(self._member(m) for m in self.memberships.get(phone.number, ())),
        ]

    def _subscriber(self, phone: Phone) -> Subscriber:
        number, name = phone.peer if phone.peer is not None else (None, None)
        return Subscriber(
            peer_name(self.config.name, phone.number),
            phone.device_state,
            connect_peer_number=number,
            connect_peer_name=name,
        )

    # -- queues ----------------------------------------------------------------------------

    def set_paused(
        self, phone: Phone, queue: QueueConfig | None, paused: bool, reason: str
    ) -> list[Event]:
        """Pause or unpause an agent in one queue, or in all of them when `queue` is None."""
        events: list[Event] = []
        for membership in self.memberships.get(phone.number, ()):
            if (queue is None or membership.queue is queue) and membership.paused != paused:
                membership.paused = paused
                events.append(self._member(membership, reason=reason if paused else ""))
        return events

    def caller_joined(self, queue: QueueConfig) -> list[Event]:
        self.waiting[queue.name] += 1
        return [QueueCalls(queue.name, self.waiting[queue.name])]

    def caller_left(self, queue: QueueConfig) -> list[Event]:
        self.waiting[queue.name] -= 1
        return [QueueCalls(queue.name, self.waiting[queue.name])]

    def agents_to_ring(self, queue: QueueConfig) -> list[Phone]:
        """Free, unpaused agents (not `/dial`-only): all of them (ringall) or the next in
        turn (rrmemory)."""
        candidates = [
            self.phones[m.agent.extension]
            for m in self._queue_members(queue)
            if not m.paused
            and self.phones[m.agent.extension].free
            and m.agent.extension not in self.config.dial_only
        ]
        if queue.ringall or not candidates:
            return candidates
        turn = self._rotation[queue.name] % len(candidates)
        self._rotation[queue.name] += 1
        return [candidates[turn]]

    def _queue_members(self, queue: QueueConfig) -> list[Membership]:
        return [
            m
            for agent in queue.agents
            for m in self.memberships[agent.extension]
            if m.queue is queue
        ]

    def _member(self, membership: Membership, reason: str | None = None) -> QueueMember:
        phone = self.phones[membership.agent.extension]
        return QueueMember(
            peer=peer_name(self.config.name, phone.number),
            queue=membership.queue.name,
            status=_MEMBER_STATUS[phone.device_state],
            calls_taken=membership.calls_taken,
            dynamic=membership.agent.dynamic,
            paused=membership.paused,
            name=phone.extension.name,
            location=self.config.location(phone.number),
            reason=reason,
        )

    # -- conference ------------------------------------------------------------------------

    def conference_add(self, channel: str, who: Participant) -> list[Event]:
        self.room[channel] = who
        return [self._cmember(channel, who, "add")]

    def conference_remove(self, channel: str) -> list[Event]:
        who = self.room.pop(channel)
        return [self._cmember(channel, who, "remove")]

    def _cmember(
        self, channel: str, who: Participant, action: Literal["add", "remove"]
    ) -> ConferenceMember:
        return ConferenceMember(
            channel=channel,
            action=action,
            conference=self.config.conference.name,
            caller_id_name=who.name,
            caller_id_num=who.number,
        )

    # -- everything ------------------------------------------------------------------------

    def snapshot(self) -> list[Event]:
        """The current state of every phone, queue, agent and conference participant."""
        events: list[Event] = []
        for phone in self.phones.values():
            status = extension_status(phone.device_state)
            events += [self._subscriber(phone), ExtStatus(phone.number, status)]
        for queue in self.config.queues:
            events.append(QueueCalls(queue.name, self.waiting[queue.name]))
            events += [self._member(m) for m in self._queue_members(queue)]
        events += [self._cmember(ch, who, "add") for ch, who in self.room.items()]
        return events
