"""A cache bounded in bytes: what a worker keeps per route can never grow past a stated size.

Each entry is stored with its cost, an estimate in bytes of the memory it holds (`cost_of` sums the
sizes of its strings and buffers plus a fixed overhead per entry). When adding an entry would pass
the budget, the oldest entries leave first (insertion order; a hit does not refresh an entry, so a
lookup stays one dict lookup). An entry larger than the whole budget is not kept at all.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

ENTRY_OVERHEAD = 256  # bytes per entry for the objects around the strings (dict slots, tuples, ...)


class ByteCache(Generic[K, V]):
    """A mapping of at most `budget` bytes (by the costs given to `put`)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        self._costs: dict[K, int] = {}
        # The hot path: the dict's own bound method, no Python frame in between.
        self.get: Callable[[K], V | None] = self._items.get

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def put(self, key: K, value: V, cost: int) -> bool:
        """Keep `value` under `key`, evicting the oldest entries as needed; False if too large."""
        self.discard(key)
        if cost > self.budget:
            return False
        while self.used + cost > self.budget:
            old, _ = self._items.popitem(last=False)
            self.used -= self._costs.pop(old)
        self._items[key] = value
        self._costs[key] = cost
        self.used += cost
        return True

    def discard(self, key: K) -> None:
        cost = self._costs.pop(key, None)
        if cost is not None:
            del self._items[key]
            self.used -= cost

    def clear(self) -> None:
        self._items.clear()
        self._costs.clear()
        self.used = 0


def cost_of(*parts: str | bytes | None) -> int:
    """The estimated memory of an entry holding these strings and buffers."""
    return ENTRY_OVERHEAD + sum(sys.getsizeof(part) for part in parts if part is not None)
