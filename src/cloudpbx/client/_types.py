"""Type names shared by the client modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from os import PathLike
from typing import Any, BinaryIO

DateLike = date | datetime | str
"""A day: a `date`, a `datetime` (its date is used) or a string (`YYYY-MM-DD`, an ISO
timestamp, `today`, `yesterday`)."""

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as bytes arrive: `(bytes in the file so far, total size or None if unknown)`."""

Destination = str | PathLike[str] | BinaryIO
"""Where a download goes: a file path, an existing folder, or a binary file object."""

JsonObject = Mapping[str, Any]
