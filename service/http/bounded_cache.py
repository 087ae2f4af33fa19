"""A cache for values derived from what clients send, bounded whatever they send."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``max_entries`` entries, each with a key of at most ``max_key_bytes`` (larger ones are
    never kept), so at most ``max_entries * max_key_bytes`` bytes of keys per process. When full it is
    cleared: the simplest eviction that keeps a hit one dict lookup, and clients whose keys all differ
    (an id in every request) only ever refill it."""

    def __init__(self, max_entries: int, max_key_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_key_bytes = max_key_bytes
        self._entries: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, key_bytes: int, value: V) -> None:
        """Keep ``value`` for ``key``, whose client-chosen part is ``key_bytes`` long."""
        if key_bytes > self.max_key_bytes:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = value

    def __len__(self) -> int:
        return len(self._entries)
