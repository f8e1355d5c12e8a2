"""Live API keys remembered for a few seconds, so that a request does not read the key.

Every authenticated request looked its key up in the database: one trip to the driver
(on SQLite to aiosqlite's thread) and the pool's check-out and rollback, ~0.1-0.3 ms, the
largest part of the fixed cost per request that kept the small lists at 4-5x their
precomputed baseline (issue 13, docs/benchmarks.md).

The price is a revocation delay: a key revoked by another process (the `cloudpbx key`
CLI, another server process) keeps working here for at most `ttl` seconds. Revocations
and PBX changes made through this process's TenantStore take effect at once (the cache
is cleared). A few seconds is no material exposure: a leaked key was usable for however
long the leak went unnoticed, and a revocation is an operator's reaction to that. A
generation counter checked per request would close the gap, but checking it is the very
database read the cache saves, so the delay is a setting (`auth_cache_ttl`, 0 turns the
cache off) and documented.

Only keys that authenticated are kept, so guesses cannot fill the cache; it is keyed by
the key's SHA-256, never the key itself. A dict lookup hashes its key with SipHash under
a per-process secret, so its timing says nothing about how much of a guess matches; the
store still compares digests with hmac.compare_digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    expires: float


class KeyCache(Generic[T]):
    """digest -> value for `ttl` seconds of `clock`, at most `max_entries` (oldest go)."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_entries: int = 10_000):
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[bytes, _Entry[T]] = {}
        self.generation = 0
        """Bumped by clear(): a lookup that began before a clear must not put its (maybe
        revoked) result back after it."""

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def get(self, digest: bytes) -> T | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() >= entry.expires:
            del self._entries[digest]
            return None
        return entry.value

    def put(self, digest: bytes, value: T, generation: int) -> None:
        """Keep `value` unless the cache was cleared since `generation` was read."""
        if not self.enabled or generation != self.generation:
            return
        now = self._clock()
        if len(self._entries) >= self._max_entries:
            self._entries = {d: e for d, e in self._entries.items() if e.expires > now}
            while len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[digest] = _Entry(value, now + self._ttl)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)
