"""Query and path parameters shared by the endpoints, and the rules they must follow.

Each rule is one regular expression, declared in the OpenAPI document as the parameter's
`pattern` and used by the check that refuses a bad value with a 400. A client (or a
schema-driven tester) that follows the document is never refused for the form of a
value; what a pattern cannot say (datestart after datestop, cpa equal to cpb) is said in
the parameter's description.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from pydantic import WithJsonSchema

from cloudpbx.domain.errors import BadRequest

_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
DATE_PATTERN = rf"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)$"
"""A real calendar date `YYYY-MM-DD` (years 0001–9999, 29 February in leap years only):
exactly what `domain.dates.parse_date` accepts."""

UNIQUEID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.?$"
"""Letters, digits, `_`, `.`, `-`; not starting with `.` or `-`, never `..` (nothing
path-like or option-like). Real ids are `epoch.seq` (1639563902.75) or an SMS's 19 digits."""
UNIQUEID_MAX = 64

EXTENSION_PATTERN = r"^[0-9]{1,10}$"
"""cpa: an extension number, ASCII digits (`\\d` would take other scripts' digits)."""

DIALABLE_PATTERN = r"^\+?[0-9*#]{1,32}$"
"""cpb: what a phone can dial: digits, `*`, `#`, an optional leading `+`."""

_UNIQUEID = re.compile(UNIQUEID_PATTERN)
_EXTENSION = re.compile(EXTENSION_PATTERN)
_DIALABLE = re.compile(DIALABLE_PATTERN)


def _string(pattern: str, **schema: Any) -> WithJsonSchema:
    """The parameter's schema in the OpenAPI document: a string with its pattern (no
    `null` alternative: a query parameter is absent or a string). Declared only: the checks
    below refuse bad values with our own messages, not FastAPI's validation errors."""
    return WithJsonSchema({"type": "string", "pattern": pattern, **schema})


DateStart = Annotated[
    str | None,
    Query(description="First day, YYYY-MM-DD, PBX time zone (default today); not after datestop"),
    _string(DATE_PATTERN, format="date", examples=["2021-12-15"]),
]
DateStop = Annotated[
    str | None,
    Query(description="Last day, inclusive, YYYY-MM-DD (default today)"),
    _string(DATE_PATTERN, format="date", examples=["2021-12-16"]),
]


def _checked_uniqueid(
    request: Request,
    uniqueid: Annotated[
        str,
        Path(description="The call's uniqueid, as listed"),
        _string(UNIQUEID_PATTERN, minLength=1, maxLength=UNIQUEID_MAX, examples=["1639563902.75"]),
    ],
) -> str:
    """The path's uniqueid, checked. Starlette's route patterns end in `$`, which also
    matches before a final newline: `/record/101%0A` reaches the route as `101`, so the
    newline is put back from the raw path (and refused) rather than silently dropped."""
    if request.scope["path"].endswith("\n") and not uniqueid.endswith("\n"):
        uniqueid += "\n"
    return check_uniqueid(uniqueid)


UniqueId = Annotated[str, Depends(_checked_uniqueid)]
"""A path's `{uniqueid}`, declared with its pattern and refused (400) unless it fits."""

DIAL_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "cpa",
        "in": "query",
        "required": True,
        "description": "The extension that rings first",
        "schema": {"type": "string", "pattern": EXTENSION_PATTERN, "examples": ["101"]},
    },
    {
        "name": "cpb",
        "in": "query",
        "required": True,
        "description": "The number it then calls; not cpa itself",
        "schema": {"type": "string", "pattern": DIALABLE_PATTERN, "examples": ["200"]},
    },
]
"""`/dial`'s parameters as the OpenAPI document declares them (FastAPI would declare an
optional parameter, or answer a missing one with its own validation error)."""


def check_uniqueid(value: str) -> str:
    """Call ids are `epoch.seq` (or an SMS id); anything path-like is refused outright."""
    if len(value) > UNIQUEID_MAX or not _UNIQUEID.fullmatch(value):
        raise BadRequest(
            f"uniqueid must look like 1639563902.75: at most {UNIQUEID_MAX} letters, digits, "
            f"'_', '.' or '-', not starting with '.' or '-', no '..'; got {value!r}",
            code="invalid_uniqueid",
        )
    return value


def check_dial(cpa: str | None, cpb: str | None) -> tuple[str, str]:
    """`/dial`'s two numbers, both present and well formed, and not the same phone."""
    for name, value in (("cpa", cpa), ("cpb", cpb)):
        if value is None or value == "":
            raise BadRequest(f"{name} is required", code="missing_parameter")
    assert cpa is not None and cpb is not None
    if not _EXTENSION.fullmatch(cpa):
        raise BadRequest(
            f"cpa must be an extension number (digits), got {cpa!r}", code="invalid_cpa"
        )
    if not _DIALABLE.fullmatch(cpb):
        raise BadRequest(
            f"cpb must be a dialable number (digits, *, #, leading +), got {cpb!r}",
            code="invalid_cpb",
        )
    if cpb == cpa:
        raise BadRequest(
            f"cpa and cpb are the same number ({cpa}): a phone cannot call itself",
            code="same_number",
        )
    return cpa, cpb
