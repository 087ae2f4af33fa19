"""The cache for client-derived values: bounded in entries and key bytes, cleared when full."""

from __future__ import annotations

from service.http.bounded_cache import BoundedCache


def test_entries_are_kept_until_the_bound_then_the_cache_starts_over() -> None:
    cache: BoundedCache[str, int] = BoundedCache(max_entries=3, max_key_bytes=10)
    for number in range(3):
        cache.put(f"k{number}", 2, number)
    assert [cache.get(f"k{n}") for n in range(3)] == [0, 1, 2] and len(cache) == 3
    cache.put("k3", 2, 3)  # full: cleared, then kept
    assert len(cache) == 1 and cache.get("k3") == 3 and cache.get("k0") is None


def test_keys_over_the_byte_bound_are_never_kept() -> None:
    cache: BoundedCache[bytes, int] = BoundedCache(max_entries=3, max_key_bytes=10)
    cache.put(b"x" * 11, 11, 1)
    cache.put(b"y" * 10, 10, 2)
    assert cache.get(b"x" * 11) is None and cache.get(b"y" * 10) == 2 and len(cache) == 1
