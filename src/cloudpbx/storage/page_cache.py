"""A small memory cache of rendered `/cdr` pages, checked against the database every time.

CDR rows are only ever added (a PBX's removal deletes all of its rows at once). So the
rows of a range are unchanged exactly when their count, smallest and largest id are: a
query on the index that costs a fraction of a millisecond, against tens of milliseconds for
rendering 10,000 rows. Integrators poll the same days over and over (billing pulls
yesterday, wallboards today), and each poll is then nearly free until a row arrives.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from cloudpbx.storage.json_rows import JsonPage

Fingerprint = tuple[int, int | None, int | None]
"""(count, min id, max id) of the rows a page was rendered from."""


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
