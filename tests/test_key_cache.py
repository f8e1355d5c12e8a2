"""KeyCache on its own: expiry by the injected clock, the size bound, clearing."""

from __future__ import annotations

from cloudpbx.storage.key_cache import KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: KeyCache[str] = KeyCache(2.0, clock)
    cache.put(b"a", "A", cache.generation)
    clock.now = 1.999
    assert cache.get(b"a") == "A"
    clock.now = 2.0
    assert cache.get(b"a") is None
    assert len(cache) == 0


def test_a_ttl_of_zero_caches_nothing() -> None:
    cache: KeyCache[str] = KeyCache(0.0, Clock())
    assert not cache.enabled
    cache.put(b"a", "A", cache.generation)
    assert cache.get(b"a") is None


def test_full_cache_drops_expired_entries_then_the_oldest() -> None:
    clock = Clock()
    cache: KeyCache[str] = KeyCache(10.0, clock, max_entries=3)
    cache.put(b"old", "old", cache.generation)
    clock.now = 5.0
    cache.put(b"b", "b", cache.generation)
    cache.put(b"c", "c", cache.generation)
    clock.now = 10.5  # b"old" has expired
    cache.put(b"d", "d", cache.generation)
    assert len(cache) == 3 and cache.get(b"old") is None
    cache.put(b"e", "e", cache.generation)  # nothing expired: the oldest live entry goes
    assert cache.get(b"b") is None
    assert [cache.get(k) for k in (b"c", b"d", b"e")] == ["c", "d", "e"]
    cache.clear()
    assert len(cache) == 0


def test_a_lookup_begun_before_a_clear_is_not_kept() -> None:
    """A revocation clears the cache while a lookup is in flight: its result, read
    before the revocation, must not be cached after it."""
    cache: KeyCache[str] = KeyCache(10.0, Clock())
    begun = cache.generation
    cache.clear()
    cache.put(b"a", "A", begun)
    assert cache.get(b"a") is None
    cache.put(b"a", "A", cache.generation)
    assert cache.get(b"a") == "A"
