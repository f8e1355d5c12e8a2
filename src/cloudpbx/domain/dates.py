"""The API's date ranges: `datestart`/`datestop` as inclusive local dates of the PBX."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import MINYEAR, UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cloudpbx.domain.errors import BadRequest

# ASCII digits only: `\d` would also take other scripts' digits, which are no date of ours.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class DateRange:
    """Inclusive local dates; `utc_bounds` is the half-open UTC interval they cover."""

    start: date
    stop: date
    zone: ZoneInfo

    def utc_bounds(self) -> tuple[datetime, datetime]:
        """[start 00:00 local, day after stop 00:00 local) as naive UTC datetimes.

        A range reaching the calendar's ends (0001-01-01, 9999-12-31: "everything") has no
        UTC instant for its edge; it is clamped to datetime.min/max instead of failing.
        """
        low = _local_midnight_utc(self.start, self.zone)
        high = (
            datetime.max
            if self.stop == date.max
            else _local_midnight_utc(self.stop + timedelta(days=1), self.zone)
        )
        return low, high


def _local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    """`day` 00:00 in `zone` as naive UTC, clamped to datetime.min/max past the calendar."""
    try:
        return datetime.combine(day, time(), zone).astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return datetime.min if day.year == MINYEAR else datetime.max


def parse_date(name: str, value: str) -> date:
    """A strict `YYYY-MM-DD`; anything else is a 400 naming the parameter."""
    if not _DATE.fullmatch(value):
        raise BadRequest(
            f"{name} must be a date in the form YYYY-MM-DD, got {value!r}", code="invalid_date"
        )
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"{name} is not a real calendar date: {value!r}", code="invalid_date"
        ) from None


def date_range(
    datestart: str | None, datestop: str | None, zone: ZoneInfo, now: datetime | None = None
) -> DateRange:
    """Resolve the query parameters: an absent bound is today in the PBX's zone."""
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    start = parse_date("datestart", datestart) if datestart is not None else today
    stop = parse_date("datestop", datestop) if datestop is not None else today
    if start > stop:
        raise BadRequest(
            f"datestart ({start.isoformat()}) is after datestop ({stop.isoformat()})",
            code="invalid_range",
        )
    return DateRange(start, stop, zone)


def local_timestamp(moment: datetime, zone: ZoneInfo) -> str:
    """`YYYY-MM-DD HH:MM:SS` in the PBX's zone, the API's timestamp format."""
    return moment.astimezone(zone).strftime(TIMESTAMP_FORMAT)
