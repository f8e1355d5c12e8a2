"""Scripts for what people do besides calling: phones going offline, do-not-disturb,
agents pausing in their queues with a reason.

Each script takes a free phone (see the ownership rule in `state`), so it never changes
a phone that is in a call, and always undoes its change after a while.
"""

from __future__ import annotations

from cloudpbx.adapters.simulator.engine import Script
from cloudpbx.adapters.simulator.sim import Sim
from cloudpbx.adapters.simulator.state import Phone

PAUSE_REASONS = ("Przerwa", "Lunch", "Spotkanie", "Szkolenie", "Praca administracyjna")


def offline_for_a_while(sim: Sim) -> Script:
    """A phone unregisters (Unavailable, 4) and registers again minutes later."""
    phone = _free_phone(sim)
    if phone is None:
        return
    sim.emit(sim.state.set_registered(phone, False))
    yield sim.rng.uniform(60.0, 1200.0)
    sim.emit(sim.state.set_registered(phone, True))


def do_not_disturb(sim: Sim) -> Script:
    """A phone turns do-not-disturb on (Busy, 2; calls to it get BUSY), later off."""
    phone = _free_phone(sim)
    if phone is None:
        return
    sim.emit(sim.state.set_dnd(phone, True))
    yield sim.rng.uniform(60.0, 900.0)
    sim.emit(sim.state.set_dnd(phone, False))


def agent_break(sim: Sim) -> Script:
    """An agent pauses with a reason, in one queue or in all of them, and comes back."""
    rng, state = sim.rng, sim.state
    ready = sorted(
        ext
        for ext, memberships in state.memberships.items()
        if ext not in sim.config.dial_only and not any(m.paused for m in memberships)
    )
    if not ready:
        return
    phone = state.phones[rng.choice(ready)]
    memberships = state.memberships[phone.number]
    queue = rng.choice(memberships).queue if rng.random() < 0.6 else None
    sim.emit(state.set_paused(phone, queue, True, rng.choice(PAUSE_REASONS)))
    yield rng.uniform(120.0, 1800.0)
    sim.emit(state.set_paused(phone, queue, False, ""))


def _free_phone(sim: Sim) -> Phone | None:
    free = sim.state.free_staff_phones()
    return sim.rng.choice(free) if free else None
