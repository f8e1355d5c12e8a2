"""Call scripts: how a call moves through its states, one timed step after another.

Every script follows the same phone-state story a wallboard expects: the caller's phone
is Connecting (32; its `extstatus` In Use, as Asterisk says) while the other side rings
(8), both are In Use (1) once answered, maybe On Hold (16) for a while, and Idle (0)
after the hang-up; the CDR row is written when the call ends. An originated call
(`/dial`) first rings the A phone (8) and only then places the call. Durations are
virtual seconds (see `engine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudpbx.adapters.simulator.cdr import CallLog, Channel, caller_id
from cloudpbx.adapters.simulator.engine import Script
from cloudpbx.adapters.simulator.model import Destination, QueueConfig
from cloudpbx.adapters.simulator.sim import CallKind, Sim, Speaker, Talk
from cloudpbx.adapters.simulator.state import Participant, Phone
from cloudpbx.domain.states import DeviceState, Disposition

DIAL_TIMEOUT = 20.0
"""Seconds a Dial rings before giving up, as `Dial(...,20)` in the lab dialplan."""


@dataclass(frozen=True, slots=True)
class Party:
    """One side of a call: a phone of this PBX, or an outside number on the trunk."""

    number: str
    name: str
    channel: Channel
    phone: Phone | None
    female: bool

    @property
    def peer(self) -> tuple[str, str]:
        """What the other side's phone shows: (connectPeerNumber, connectPeerName)."""
        return self.number, self.name

    @property
    def speaker(self) -> Speaker:
        return Speaker(self.name, self.number, self.female, external=self.phone is None)


def phone_party(sim: Sim, phone: Phone) -> Party:
    """A new channel of `phone`'s endpoint."""
    channel = sim.channel(sim.config.endpoint(phone.number))
    return Party(phone.number, phone.extension.name, channel, phone, phone.extension.female)


def outside_party(sim: Sim, number: str) -> Party:
    """A new trunk channel for an outside number (presented with the number as its name)."""
    channel = sim.channel(sim.config.trunk)
    return Party(number, number, channel, None, sim.rng.random() < 0.5)


def start_log(sim: Sim, caller: Party, target: str) -> CallLog:
    """The CDR of a call `caller` places to `target`, starting now."""
    return CallLog(
        started_at=sim.now(),
        begin=sim.t,
        clid=caller_id(caller.name, caller.number),
        src=caller.number,
        dst=target,
        channel=caller.channel,
        lastapp="Dial",
    )


def display_name(sim: Sim, number: str) -> str:
    """The name a phone shows for a dialled number."""
    config = sim.config
    if (extension := config.extension(number)) is not None:
        return extension.name
    if (queue := config.queue_by_number(number)) is not None:
        return queue.name
    if number == config.conference.number:
        return config.conference.name
    return number


def originate(sim: Sim, phone: Phone, target: str) -> Script:
    """`/dial`: ring the A phone; once it answers, it calls `target`.

    The A phone always answers (its user asked for the call), and an idle extension
    called this way always answers too, so a demo `/dial` shows the whole story.
    A phone that was taken in the meantime makes the originate fail without a CDR, as an
    Asterisk Originate whose A channel cannot be created.
    """
    if not phone.free:
        return
    caller = phone_party(sim, phone)
    log = start_log(sim, caller, target)
    _show(sim, caller, DeviceState.RINGING, (target, display_name(sim, target)))
    yield sim.rng.uniform(1.0, 4.0)
    yield from place_call(sim, log, caller, target, sure=True)


def place_call(sim: Sim, log: CallLog, caller: Party, target: str, *, sure: bool = False) -> Script:
    """`caller` dials `target`; routes it like the dialplan and runs it to its CDR."""
    destination = sim.config.destination(target)
    _show(sim, caller, DeviceState.CONNECTING, (target, display_name(sim, target)))
    if destination is Destination.EXTENSION:
        yield from _call_extension(sim, log, caller, sim.state.phones[target], sure=sure)
    elif destination is Destination.EXTERNAL:
        yield from _call_outside(sim, log, caller, target)
    elif destination is Destination.QUEUE:
        queue = sim.config.queue_by_number(target)
        assert queue is not None
        yield from _wait_in_queue(sim, log, caller, queue)
    elif destination is Destination.CONFERENCE:
        yield from _stay_in_conference(sim, log, caller)
    else:
        yield sim.rng.uniform(0.2, 1.0)
        _show(sim, caller, DeviceState.IDLE)
        sim.finish(log, Disposition.FAILED)


def _call_extension(sim: Sim, log: CallLog, caller: Party, phone: Phone, *, sure: bool) -> Script:
    rng = sim.rng
    if not phone.registered:
        # CHANUNAVAIL: no channel is created for an unregistered endpoint.
        yield rng.uniform(0.2, 1.0)
        _show(sim, caller, DeviceState.IDLE)
        sim.finish(log, Disposition.FAILED)
        return
    callee = phone_party(sim, phone)
    log.dstchannel = callee.channel.name
    if not phone.free:
        # The phone answers `486 Busy Here` (in a call already, or do-not-disturb).
        yield rng.uniform(0.5, 2.0)
        _show(sim, caller, DeviceState.IDLE)
        sim.finish(log, Disposition.BUSY)
        return
    _show(sim, callee, DeviceState.RINGING, caller.peer)
    answer_after = rng.uniform(1.5, 6.0) if sure else rng.uniform(2.0, 30.0)
    give_up = DIAL_TIMEOUT if sure else min(DIAL_TIMEOUT, rng.uniform(6.0, 45.0))
    if answer_after >= give_up:
        yield give_up
        _show(sim, callee, DeviceState.IDLE)
        _show(sim, caller, DeviceState.IDLE)
        sim.finish(log, Disposition.NO_ANSWER)
        return
    yield answer_after
    kind = CallKind.INBOUND if caller.phone is None else CallKind.INTERNAL
    host, guest = (callee, caller) if caller.phone is None else (caller, callee)
    yield from _conversation(sim, log, caller, callee)
    sim.finish(log, Disposition.ANSWERED, Talk(kind, host.speaker, guest.speaker))


def _call_outside(sim: Sim, log: CallLog, caller: Party, number: str) -> Script:
    rng = sim.rng
    callee = outside_party(sim, number)
    log.dstchannel = callee.channel.name
    log.rated = True
    outcome = rng.random()
    if outcome < 0.05:
        yield rng.uniform(0.5, 3.0)
        disposition = Disposition.FAILED
    elif outcome < 0.15:
        yield rng.uniform(1.0, 4.0)
        disposition = Disposition.BUSY
    elif outcome < 0.28:
        yield rng.uniform(10.0, 40.0)
        disposition = Disposition.NO_ANSWER
    else:
        yield rng.uniform(3.0, 18.0)
        yield from _conversation(sim, log, caller, callee)
        sim.finish(
            log, Disposition.ANSWERED, Talk(CallKind.OUTBOUND, caller.speaker, callee.speaker)
        )
        return
    _show(sim, caller, DeviceState.IDLE)
    sim.finish(log, disposition)


def _wait_in_queue(sim: Sim, log: CallLog, caller: Party, queue: QueueConfig) -> Script:
    """A caller waits in `queue`; agents are rung until one answers or the caller gives up.

    Like `Queue(Kolejka1,r)`: the caller hears ringing and the call is not answered
    before an agent answers, so an abandoned call is NO ANSWER. A full queue is BUSY.
    """
    rng, state = sim.rng, sim.state
    log.lastapp = "Queue"
    if state.waiting[queue.name] >= queue.maxlen:
        yield rng.uniform(0.3, 1.0)
        _show(sim, caller, DeviceState.IDLE)
        sim.finish(log, Disposition.BUSY)
        return
    sim.emit(state.caller_joined(queue))
    deadline = sim.t + rng.uniform(15.0, 240.0)
    while sim.t < deadline:
        agents = [phone_party(sim, phone) for phone in state.agents_to_ring(queue)]
        if not agents:
            yield min(queue.retry, deadline - sim.t)
            continue
        for agent in agents:
            _show(sim, agent, DeviceState.RINGING, caller.peer)
        log.dstchannel = agents[-1].channel.name
        answer_after = rng.uniform(2.0, 20.0)
        ring_for = min(answer_after, queue.ring_timeout, deadline - sim.t)
        yield ring_for
        if ring_for == answer_after:
            winner = rng.choice(agents)
            for agent in agents:
                if agent is not winner:
                    _show(sim, agent, DeviceState.IDLE)
            sim.emit(state.caller_left(queue))
            log.dstchannel = winner.channel.name
            yield from _conversation(sim, log, caller, winner, completes=queue)
            talk = Talk(CallKind.QUEUE, winner.speaker, caller.speaker, queue.name)
            sim.finish(log, Disposition.ANSWERED, talk)
            return
        for agent in agents:
            _show(sim, agent, DeviceState.IDLE)
        if sim.t < deadline:
            yield min(queue.retry, deadline - sim.t)
    sim.emit(state.caller_left(queue))
    _show(sim, caller, DeviceState.IDLE)
    sim.finish(log, Disposition.NO_ANSWER)


def _stay_in_conference(sim: Sim, log: CallLog, who: Party) -> Script:
    """`ConfBridge(SesjaRady)`: answered at once; in the room until the caller leaves."""
    room = sim.config.conference
    log.lastapp = "ConfBridge"
    yield sim.rng.uniform(0.2, 0.6)
    log.answer = sim.t
    _show(sim, who, DeviceState.IN_USE, (room.number, room.name))
    sim.emit(sim.state.conference_add(who.channel.name, Participant(who.name, who.number)))
    yield _clamp(sim.rng.lognormvariate(math.log(90.0), 0.7), 15.0, 900.0)
    sim.emit(sim.state.conference_remove(who.channel.name))
    _show(sim, who, DeviceState.IDLE)
    chair = Speaker("Prowadzący", room.number, sim.rng.random() < 0.5, external=False)
    sim.finish(log, Disposition.ANSWERED, Talk(CallKind.CONFERENCE, who.speaker, chair, room.name))


def _conversation(
    sim: Sim, log: CallLog, caller: Party, callee: Party, *, completes: QueueConfig | None = None
) -> Script:
    """Answer, talk (maybe with a hold), hang up. `completes` counts an agent's queue call."""
    rng = sim.rng
    log.answer = sim.t
    _show(sim, callee, DeviceState.IN_USE, caller.peer)
    _show(sim, caller, DeviceState.IN_USE, callee.peer)
    seconds = _clamp(rng.lognormvariate(math.log(35.0), 0.7), 6.0, 900.0)
    holders = [p for p in (caller, callee) if p.phone is not None]
    if holders and seconds > 20.0 and rng.random() < 0.15:
        holder = rng.choice(holders)
        other = callee if holder is caller else caller
        before = rng.uniform(5.0, seconds - 12.0)
        held = rng.uniform(3.0, min(40.0, seconds - before - 5.0))
        yield before
        _show(sim, holder, DeviceState.ON_HOLD, other.peer)
        yield held
        _show(sim, holder, DeviceState.IN_USE, other.peer)
        yield seconds - before - held
    else:
        yield seconds
    if completes is not None and callee.phone is not None:
        sim.state.complete_agent_call(callee.phone, completes)
    first, second = (caller, callee) if rng.random() < 0.5 else (callee, caller)
    _show(sim, first, DeviceState.IDLE)
    _show(sim, second, DeviceState.IDLE)


def _show(sim: Sim, party: Party, state: DeviceState, peer: tuple[str, str] | None = None) -> None:
    """Move a party's phone to `state` (outside parties have no phone to show)."""
    if party.phone is not None:
        sim.emit(sim.state.set_call_state(party.phone, state, peer))


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
