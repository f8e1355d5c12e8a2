"""What happens next on the PBX: arrivals of calls and presence changes, drawn from the seed.

Arrivals are Poisson processes; an `intensity` function (0..1 of the peak rate, by local
time) thins them into office hours for the history. Each arrival picks a scenario from a
fixed mix, so the same seed gives the same sequence of scenarios.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from cloudpbx.adapters.simulator.calls import outside_party, phone_party, place_call, start_log
from cloudpbx.adapters.simulator.engine import Script
from cloudpbx.adapters.simulator.model import MOBILE_PREFIXES
from cloudpbx.adapters.simulator.presence import agent_break, do_not_disturb, offline_for_a_while
from cloudpbx.adapters.simulator.sim import Sim
from cloudpbx.adapters.simulator.state import Phone


def queue_call(sim: Sim) -> Script:
    """A customer calls the company number and lands in Kolejka1 or Kolejka2."""
    queues = sim.config.queues
    queue = queues[0] if sim.rng.random() < 0.6 or len(queues) == 1 else queues[1]
    caller = outside_party(sim, sim.rng.choice(sim.config.customers))
    yield from place_call(sim, start_log(sim, caller, queue.number), caller, queue.number)


def internal_call(sim: Sim) -> Script:
    """One colleague calls another (who may be busy, away or not answering)."""
    phone = _free_phone(sim)
    if phone is None:
        return
    others = [e.number for e in sim.config.staff if e.number != phone.number]
    target = sim.rng.choice(others)
    caller = phone_party(sim, phone)
    yield from place_call(sim, start_log(sim, caller, target), caller, target)


def outbound_call(sim: Sim) -> Script:
    """An employee calls out: a known contact, or a new mobile number."""
    phone = _free_phone(sim)
    if phone is None:
        return
    rng = sim.rng
    if rng.random() < 0.8:
        target = rng.choice(sim.config.contacts)
    else:
        target = f"{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10_000_000):07d}"
    caller = phone_party(sim, phone)
    yield from place_call(sim, start_log(sim, caller, target), caller, target)


def direct_call(sim: Sim) -> Script:
    """A customer dials an employee's direct number."""
    target = sim.rng.choice(sim.config.staff).number
    caller = outside_party(sim, sim.rng.choice(sim.config.customers))
    yield from place_call(sim, start_log(sim, caller, target), caller, target)


def conference_call(sim: Sim) -> Script:
    """Somebody joins the SesjaRady room: mostly colleagues, sometimes an outside guest."""
    room = sim.config.conference.number
    phone = _free_phone(sim) if sim.rng.random() < 0.75 else None
    if phone is not None:
        caller = phone_party(sim, phone)
    else:
        caller = outside_party(sim, sim.rng.choice(sim.config.customers))
    yield from place_call(sim, start_log(sim, caller, room), caller, room)


Scenario = Callable[[Sim], Script]
Mix = tuple[tuple[Scenario, float], ...]

CALLS: Mix = (
    (queue_call, 38.0),
    (internal_call, 22.0),
    (outbound_call, 22.0),
    (direct_call, 11.0),
    (conference_call, 4.0),
)
PRESENCE: Mix = (
    (agent_break, 4.0),
    (offline_for_a_while, 3.0),
    (do_not_disturb, 3.0),
)
PRESENCE_PER_HOUR = 20.0
"""Presence changes per virtual hour at full intensity: people pause at their own pace,
however busy the lines are."""


def office(
    sim: Sim, call_rate: float, intensity: Callable[[datetime], float] | None = None
) -> tuple[Script, Script]:
    """Bring the PBX to life: calls at `call_rate` per virtual second, presence changes
    at `PRESENCE_PER_HOUR`; returns both arrival scripts (to close them when done)."""
    calls = arrivals(sim, CALLS, call_rate, intensity)
    presence = arrivals(sim, PRESENCE, PRESENCE_PER_HOUR / 3600.0, intensity)
    sim.spawn(calls)
    sim.spawn(presence)
    return calls, presence


def arrivals(
    sim: Sim, mix: Mix, rate: float, intensity: Callable[[datetime], float] | None = None
) -> Script:
    """Start a scenario of `mix` at random moments, `rate` per virtual second at full
    intensity (a Poisson process, thinned by `intensity`)."""
    rng = sim.rng
    scenarios = [scenario for scenario, _ in mix]
    weights = [weight for _, weight in mix]
    while True:
        yield rng.expovariate(rate)
        if intensity is None or rng.random() < intensity(sim.now()):
            sim.spawn(rng.choices(scenarios, weights)[0](sim))


def _free_phone(sim: Sim) -> Phone | None:
    free = sim.state.free_staff_phones()
    return sim.rng.choice(free) if free else None
