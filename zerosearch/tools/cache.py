"""A bounded least-recently-used cache of search results (documents by request key)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class LRUCache:
    """``size`` entries at most; ``size == 0`` turns the cache off (every lookup misses)."""

    def __init__(self, size: int):
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"cache_size (retriever.cache_size) must be an int >= 0, got {size!r}")
        self.size = size
        self._items: OrderedDict[Hashable, str] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def get(self, key: Hashable) -> str | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: str) -> None:
        if not self.enabled:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
