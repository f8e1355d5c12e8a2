"""Lists rendered to JSON by the database itself.

`/record` and `/transcription` return up to 10,000 rows. Building them row by row in
Python costs more than the query; SQLite's `json_group_array(json_object(...))` and
PostgreSQL's `json_agg(json_build_object(...) ORDER BY ...)` produce the JSON array in C,
and the API sends those bytes as they are. (`/cdr` joins JSON stored per row when it was
written: storage/calls.py.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, Text, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

ORDER_PREFIX = "_order_"


@dataclass(frozen=True, slots=True)
class JsonPage:
    """A list already rendered as a JSON array, and how many rows matched in all.

    `tag` is a strong validator of `body` when the store can name one without reading
    the bytes (the /cdr fingerprint); None leaves it to the API to hash the body.
    `derived` is where the API keeps what it computes from the page once (its ETag, its
    gzip body): a page served from the cache is compressed once, not per request.
    """

    body: bytes
    total: int
    cap: int
    tag: str | None = None
    derived: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def truncated(self) -> bool:
        return self.total > self.cap


def json_array_of(dialect: str, rows: Select[Any]) -> Select[str]:
    """One JSON array string of objects built from `rows`' labelled columns, in order.

    `rows` must be ordered and limited already; columns whose label starts with
    ORDER_PREFIX are the sort keys (not output), the others become object fields in the
    order they are selected.
    """
    sub = rows.subquery("rows")
    fields = [column for column in sub.c if not column.key.startswith(ORDER_PREFIX)]
    sort_keys = [column for column in sub.c if column.key.startswith(ORDER_PREFIX)]
    pairs: list[Any] = []
    for column in fields:
        pairs.extend((literal_column(f"'{column.key}'"), column))
    if dialect == "postgresql":
        aggregate = func.json_agg(aggregate_order_by(func.json_build_object(*pairs), *sort_keys))
    else:
        # SQLite before 3.44 has no ORDER BY inside an aggregate. The ordered, limited
        # subquery runs as a co-routine that feeds json_group_array in its own order;
        # tests/test_storage_calls.py checks the order (ties included) on both engines.
        aggregate = func.json_group_array(func.json_object(*pairs))
    return select(func.coalesce(cast(aggregate, Text), "[]"))


def ordered(columns: Sequence[Any]) -> list[Any]:
    """Label sort-key columns so that json_array_of keeps them out of the objects."""
    return [column.label(f"{ORDER_PREFIX}{index}") for index, column in enumerate(columns)]
