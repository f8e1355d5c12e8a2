"""Days in, `YYYY-MM-DD` out; the contract's `YYYY-MM-DD HH:MM:SS` timestamps back in."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from cloudpbx.client._types import DateLike


def to_date(value: DateLike, *, today: date | None = None) -> date:
    """`date`, `datetime` (its own date, in its own zone), or a string.

    Strings: `YYYY-MM-DD`, an ISO timestamp, `today`, `yesterday` (this machine's day:
    the PBX's day may differ near midnight when the zones differ).
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = value.strip().lower()
    now = today or date.today()
    if text == "today":
        return now
    if text == "yesterday":
        return now - timedelta(days=1)
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(value.strip()).date()
    except ValueError:
        raise ValueError(
            f"not a day: {value!r}; use YYYY-MM-DD, an ISO timestamp, 'today' or 'yesterday'"
        ) from None


def date_param(value: DateLike | None) -> str | None:
    """The query value of `datestart`/`datestop` (None: leave it out, the server's today)."""
    return None if value is None else to_date(value).isoformat()


def parse_timestamp(value: object) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` (PBX local time, naive); ISO forms are accepted too."""
    if not isinstance(value, str):
        raise ValueError(f"expected a timestamp string, got {value!r}")
    return datetime.fromisoformat(value.strip())
