"""A small built-in tariff: which billing zone an outside number is in, and what it costs.

Only outgoing calls to the outside are rated (as on a real PBX's billing); internal and
incoming calls carry no cost and no zone. Prices are in grosze per started minute; an
unanswered call is rated at 0 but keeps its zone, so a report can still group it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudpbx.adapters.simulator.model import LOCAL_AREA, MOBILE_PREFIXES


@dataclass(frozen=True, slots=True)
class Zone:
    """A billing zone and its price per started minute, in grosze."""

    name: str
    per_minute: int

    def cost(self, billsec: int) -> int:
        """Cost of `billsec` seconds of conversation, every started minute paid in full."""
        return self.per_minute * math.ceil(billsec / 60)


MOBILE = Zone("Komórkowe", 12)
LOCAL = Zone("Stacjonarne lokalne", 6)
NATIONAL = Zone("Stacjonarne krajowe", 8)
INTERNATIONAL = Zone("Międzynarodowe", 49)
FREEPHONE = Zone("Bezpłatne", 0)


def zone_of(number: str) -> Zone | None:
    """The zone of a dialled outside number, None when it cannot be rated."""
    if number.startswith("+48"):
        number = number[3:]
    elif number.startswith("0048"):
        number = number[4:]
    elif number.startswith(("+", "00")):
        return INTERNATIONAL
    if len(number) == 11 and number.startswith("48"):
        number = number[2:]
    if len(number) != 9 or not number.isdigit():
        return None
    if number.startswith("800"):
        return FREEPHONE
    if number.startswith(MOBILE_PREFIXES):
        return MOBILE
    if number.startswith(LOCAL_AREA):
        return LOCAL
    return NATIONAL
