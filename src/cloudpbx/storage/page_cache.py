"""A small memory cache of rendered `/cdr` pages, checked against the database every time.

CDR rows are only ever added (a PBX's removal deletes all of its rows at once, and its id
is never reused), except an SMS row's cost, which arrives later and bumps the PBX's
`cdr_revision` in the same transaction (storage/calls.py, set_cdr_cost). So the rows of a
range are unchanged exactly when their count and that revision are: a count on the index,
a fraction of a millisecond, against milliseconds for joining 10,000 stored rows. A count
is exact whatever order concurrent inserts commit in (a largest id would not be: on
PostgreSQL a smaller id can commit after a larger one). Integrators poll the same days over
and over (billing pulls yesterday, wallboards today), and each poll is then nearly free
until a row arrives.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from cloudpbx.storage.json_rows import JsonPage

Fingerprint = tuple[int, int]
"""(count of the range's rows, the PBX's cdr_revision) when a page was rendered."""


class PageCache:
    """Least-recently-used pages, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._pages: OrderedDict[Hashable, tuple[Fingerprint, JsonPage]] = OrderedDict()

    def get(self, key: Hashable, fingerprint: Fingerprint) -> JsonPage | None:
        entry = self._pages.get(key)
        if entry is None:
            return None
        if entry[0] != fingerprint:
            self._drop(key)
            return None
        self._pages.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, fingerprint: Fingerprint, page: JsonPage) -> None:
        size = len(page.body)
        if size > self._max_bytes:
            return
        if key in self._pages:
            self._drop(key)
        self._pages[key] = (fingerprint, page)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._pages)))

    def _drop(self, key: Hashable) -> None:
        _, page = self._pages.pop(key)
        self._bytes -= len(page.body)

    @property
    def size(self) -> int:
        return self._bytes
