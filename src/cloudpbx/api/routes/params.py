"""Query and path parameters shared by the endpoints."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query

from cloudpbx.domain.errors import BadRequest

DateStart = Annotated[
    str | None, Query(description="First day, YYYY-MM-DD, PBX time zone (default today)")
]
DateStop = Annotated[
    str | None, Query(description="Last day, inclusive, YYYY-MM-DD (default today)")
]

_UNIQUEID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_uniqueid(value: str) -> str:
    """Call ids are `epoch.seq` (or an SMS id); anything path-like is refused outright."""
    if not _UNIQUEID.fullmatch(value) or ".." in value:
        raise BadRequest(
            f"uniqueid must look like 1639563902.75 (letters, digits, '.', '_', '-'), "
            f"got {value!r}",
            code="invalid_uniqueid",
        )
    return value
