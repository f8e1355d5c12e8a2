"""The configuration of a simulated PBX: who is on it, which queues and rooms it has.

This is what an administrator would have typed into the PBX: extensions with their caller
names, queues with static and dynamic agents, a conference room, the outside numbers that
call in and get called. It never changes while the simulator runs; the living state is in
:mod:`cloudpbx.adapters.simulator.state`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import Enum

EXTENSION_NAMES = (
    ("101", "Anna Kowalska"),
    ("102", "Jan Nowak"),
    ("103", "Piotr Wiśniewski"),
    ("104", "Katarzyna Wójcik"),
    ("105", "Tomasz Kamiński"),
    ("106", "Magdalena Lewandowska"),
    ("107", "Michał Zieliński"),
    ("108", "Agnieszka Szymańska"),
    ("109", "Krzysztof Woźniak"),
    ("110", "Ewa Dąbrowska"),
)

DIAL_DESK = "101"
"""The reception's phone, kept for `/dial` (the document's example is `cpa=101`)."""

_DIALLABLE = re.compile(r"^\+?\d{1,20}$")
# Polish mobile ranges (first two digits of a nine-digit national number).
MOBILE_PREFIXES = ("45", "50", "51", "53", "57", "60", "66", "69", "72", "73", "78", "79", "88")
LOCAL_AREA = "22"


@dataclass(frozen=True, slots=True)
class Extension:
    """A phone on the PBX: its number and the caller name it presents."""

    number: str
    name: str

    @property
    def female(self) -> bool:
        """Polish given names ending in -a are female; picks the synthetic voice's pitch."""
        return self.name.split()[0].endswith("a")


@dataclass(frozen=True, slots=True)
class Agent:
    """A queue member; dynamic agents logged themselves in, static ones are configured."""

    extension: str
    dynamic: bool


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A call queue, reached on `number`.

    `ringall` rings every free agent at once, otherwise agents take turns (rrmemory);
    `maxlen` callers may wait, a further caller hears busy.
    """

    name: str
    number: str
    agents: tuple[Agent, ...]
    ringall: bool
    ring_timeout: float = 15.0
    retry: float = 5.0
    maxlen: int = 10


@dataclass(frozen=True, slots=True)
class ConferenceConfig:
    """A ConfBridge room reached on `number`."""

    name: str
    number: str


class Destination(Enum):
    """Where a dialled number leads on this PBX."""

    EXTENSION = "extension"
    QUEUE = "queue"
    CONFERENCE = "conference"
    EXTERNAL = "external"
    UNKNOWN = "unknown"
    """Digits that lead nowhere on this PBX: the Dial fails (CHANUNAVAIL, FAILED)."""
    INVALID = "invalid"
    """Not a number at all: nothing can even try to dial it."""


@dataclass(frozen=True, slots=True)
class PbxConfig:
    """Everything static about one simulated PBX."""

    name: str
    extensions: tuple[Extension, ...]
    queues: tuple[QueueConfig, ...]
    conference: ConferenceConfig
    customers: tuple[str, ...]
    contacts: tuple[str, ...]
    dial_only: frozenset[str] = frozenset()
    """Extensions whose phone only takes part in `/dial` calls: the simulated office never
    calls them, rings them from a queue, pauses them or takes them offline, so a `/dial`
    from them finds them free (unless an earlier `/dial` call is still on them)."""

    @property
    def staff(self) -> tuple[Extension, ...]:
        """The extensions the simulated office's own traffic uses."""
        return tuple(e for e in self.extensions if e.number not in self.dial_only)

    def extension(self, number: str) -> Extension | None:
        return next((e for e in self.extensions if e.number == number), None)

    def queue_by_number(self, number: str) -> QueueConfig | None:
        return next((q for q in self.queues if q.number == number), None)

    def endpoint(self, extension: str) -> str:
        """The SIP endpoint (peer) of an extension: `MojaCentrala-101`."""
        return f"{self.name}-{extension}"

    @property
    def trunk(self) -> str:
        """The SIP endpoint that carries this PBX's outside calls."""
        return f"{self.name}-trunk"

    def location(self, extension: str) -> str:
        """A queue member's interface as the contract shows it: `SIP/MojaCentrala-101`."""
        return f"SIP/{self.endpoint(extension)}"

    def destination(self, number: str) -> Destination:
        """Route a dialled number the way this PBX's dialplan would."""
        if not _DIALLABLE.match(number):
            return Destination.INVALID
        if self.extension(number) is not None:
            return Destination.EXTENSION
        if self.queue_by_number(number) is not None:
            return Destination.QUEUE
        if number == self.conference.number:
            return Destination.CONFERENCE
        digits = number.lstrip("+")
        if len(digits) >= 9 or number.startswith(("+", "00")):
            return Destination.EXTERNAL
        return Destination.UNKNOWN


def default_config(pbx: str) -> PbxConfig:
    """The demo PBX: ten extensions, two queues, one conference room; 101 is `/dial`'s.

    Outside numbers are drawn from a generator seeded with a constant, so every PBX has the
    same customers and contacts, and repeat callers appear in the history as they would.
    """
    numbers = random.Random(20260101)
    customers = tuple(_customer_number(numbers, mobile=index % 3 != 2) for index in range(40))
    contacts = tuple(_contact_number(numbers, index) for index in range(30))
    return PbxConfig(
        name=pbx,
        extensions=tuple(Extension(number, name) for number, name in EXTENSION_NAMES),
        queues=(
            QueueConfig(
                "Kolejka1",
                "500",
                (Agent("102", False), Agent("106", False), Agent("103", True)),
                ringall=True,
            ),
            QueueConfig(
                "Kolejka2",
                "501",
                (Agent("104", False), Agent("105", True), Agent("103", True)),
                ringall=False,
            ),
        ),
        conference=ConferenceConfig("SesjaRady", "600"),
        customers=customers,
        contacts=contacts,
        dial_only=frozenset({DIAL_DESK}),
    )


def _customer_number(rng: random.Random, *, mobile: bool) -> str:
    """A caller as the operator presents it: mobiles as `48XXXXXXXXX`, landlines national."""
    if mobile:
        return f"48{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10_000_000):07d}"
    area = rng.choice((LOCAL_AREA, LOCAL_AREA, "12", "58", "61", "71"))
    return f"{area}{rng.randrange(2_000_000, 8_000_000):07d}"


def _contact_number(rng: random.Random, index: int) -> str:
    """A number an employee dials out to, in the national format users type."""
    kind = index % 10
    if kind < 5:
        return f"{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10_000_000):07d}"
    if kind < 7:
        return f"{LOCAL_AREA}{rng.randrange(2_000_000, 8_000_000):07d}"
    if kind < 8:
        return f"{rng.choice(('12', '58', '61'))}{rng.randrange(2_000_000, 8_000_000):07d}"
    if kind < 9:
        return f"800{rng.randrange(1_000_000):06d}"
    return rng.choice(("0049", "0044", "00420")) + str(rng.randrange(10**8, 10**9))
