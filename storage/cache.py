"""Per-node caches that are only trusted while the invalidation bus is healthy.

Each cache keeps a generation counter per entry; an invalidation that lands while a load is in flight
bumps it, and the stale result is returned to that one caller but never stored. Hits and misses are plain
counters, read by the node's metrics at scrape time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .bus import InvalidationBus

T = TypeVar("T")


class CachedValue(Generic[T]):
    """One value (a whole family list, the global state) kept until its kind is invalidated."""

    def __init__(self, bus: InvalidationBus, kind: str, loader: Callable[[], Awaitable[T]]) -> None:
        self.bus = bus
        self.loader = loader
        self._value: T | None = None
        self._valid = False
        self._gen = 0
        self.hits = 0
        self.misses = 0
        bus.on(kind, lambda name: self.invalidate())
        bus.on_reset(self.invalidate)

    def invalidate(self) -> None:
        self._gen += 1
        self._valid = False
        self._value = None

    async def get(self) -> T:
        if self._valid and self.bus.healthy:
            assert self._value is not None
            self.hits += 1
            return self._value
        self.misses += 1
        gen = self._gen
        value = await self.loader()
        if gen == self._gen and self.bus.healthy:
            self._value, self._valid = value, True
        return value


class KeyedCache(Generic[T]):
    """Many small values by name (users, sessions), LRU-capped. `None` results are cached too."""

    def __init__(
        self, bus: InvalidationBus, kind: str, loader: Callable[[str], Awaitable[T | None]], size: int = 10_000
    ) -> None:
        self.bus = bus
        self.loader = loader
        self.size = size
        self._items: OrderedDict[str, T | None] = OrderedDict()
        self._gens: dict[str, int] = {}
        self._epoch = 0  # bumped by a full reset
        self.hits = 0
        self.misses = 0
        bus.on(kind, self.invalidate)
        bus.on_reset(self.clear)

    def clear(self) -> None:
        self._epoch += 1
        self._items.clear()
        self._gens.clear()

    def invalidate(self, name: str) -> None:
        if name == "*":
            self.clear()
            return
        self._items.pop(name, None)
        self._gens[name] = self._gens.get(name, 0) + 1
        if len(self._gens) > 4 * self.size:  # every login/logout invalidates a name: keep this bounded
            self.clear()

    async def get(self, name: str) -> T | None:
        if self.bus.healthy and name in self._items:
            self._items.move_to_end(name)
            self.hits += 1
            return self._items[name]
        self.misses += 1
        gen, epoch = self._gens.get(name, 0), self._epoch
        value = await self.loader(name)
        if self.bus.healthy and gen == self._gens.get(name, 0) and epoch == self._epoch:
            self._items[name] = value
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return value
