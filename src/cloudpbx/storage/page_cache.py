"""A small memory cache of rendered list pages, checked against the database every time.

`/record` and `/transcription` pages are checked by their PBX's revision of the list, one
primary-key read (storage/revisions.py). What follows is about `/cdr`.

CDR rows are only ever added (a PBX's removal deletes all of its rows at once, and its id
is never reused), except an SMS row's cost, which arrives later and bumps the PBX's
`cdr_revision` in the same transaction (storage/calls.py, set_cdr_cost). So the rows of a
range are unchanged exactly when their count and that revision are: a count on the index,
a fraction of a millisecond, against milliseconds for joining 10,000 stored rows. A count
is exact whatever order concurrent inserts commit in (a largest id would not be: on
PostgreSQL a smaller id can commit after a larger one). Integrators poll the same days over
and over (billing pulls yesterday, wallboards today), and each poll is then nearly free
until a row arrives.

On SQLite there is a cheaper check first, the stamp: the largest CDR id of the whole table
and the PBX's revision, two index lookups. SQLite has one writer at a time, so ids appear in
commit order and an unchanged largest id means no CDR row was stored since. When the stamp
moved (a row arrived, perhaps for another PBX or day), the count decides, and a page that
is still exact is stamped anew.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from cloudpbx.storage.json_rows import JsonPage

Fingerprint = tuple[int, ...]
"""What a page's rows were rendered under: for /cdr (count of the range's rows, the
PBX's cdr_revision); for the other lists (the PBX's revision of that list,)."""
Stamp = tuple[int, int]
"""(largest CDR id of the table, the PBX's cdr_revision), read before the fingerprint."""


@dataclass(slots=True)
class _Entry:
    fingerprint: Fingerprint
    page: JsonPage
    stamp: Stamp | None


class PageCache:
    """Least-recently-used pages, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._pages: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._pages

    def fresh(self, key: Hashable, stamp: Stamp) -> JsonPage | None:
        """The page of `key` if nothing was stored since it was last checked (SQLite)."""
        entry = self._pages.get(key)
        if entry is None or entry.stamp != stamp:
            return None
        self._pages.move_to_end(key)
        return entry.page

    def get(
        self, key: Hashable, fingerprint: Fingerprint, stamp: Stamp | None = None
    ) -> JsonPage | None:
        """The page of `key` if its rows are still those of `fingerprint`; it then takes
        `stamp`, read before the fingerprint (an older stamp only costs a count later)."""
        entry = self._pages.get(key)
        if entry is None:
            return None
        if entry.fingerprint != fingerprint:
            self._drop(key)
            return None
        entry.stamp = stamp
        self._pages.move_to_end(key)
        return entry.page

    def put(
        self, key: Hashable, fingerprint: Fingerprint, page: JsonPage, stamp: Stamp | None = None
    ) -> None:
        size = len(page.body)
        if size > self._max_bytes:
            return
        if key in self._pages:
            self._drop(key)
        self._pages[key] = _Entry(fingerprint, page, stamp)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._pages)))

    def _drop(self, key: Hashable) -> None:
        entry = self._pages.pop(key)
        self._bytes -= len(entry.page.body)

    @property
    def size(self) -> int:
        return self._bytes
