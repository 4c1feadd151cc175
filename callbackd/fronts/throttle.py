"""At most so many hits per key within a sliding window, in this process's memory."""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Final

from twisted.internet.interfaces import IReactorTime

__all__ = ["Throttle"]


class Throttle:
    """At most ``limit`` hits per key within ``period`` seconds (a sliding window)."""

    #: hits between sweeps of the keys whose window has passed
    SWEEP_EVERY: Final = 1000

    def __init__(self, clock: IReactorTime, limit: int, period: float) -> None:
        self.clock = clock
        self.limit = limit
        self.period = period
        self._hits: dict[Hashable, collections.deque[float]] = {}
        self._until_sweep = self.SWEEP_EVERY

    def full(self, key: Hashable) -> bool:
        """Whether ``key`` has had ``limit`` hits within the window."""
        hits = self._hits.get(key)
        if hits is None:
            return False
        start = self.clock.seconds() - self.period
        while hits and hits[0] <= start:
            hits.popleft()
        if not hits:
            del self._hits[key]
        return len(hits) >= self.limit

    def record(self, key: Hashable) -> None:
        """Count a hit of ``key`` now."""
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._sweep()
        self._hits.setdefault(key, collections.deque()).append(self.clock.seconds())

    def hit(self, key: Hashable) -> bool:
        """Count a hit of ``key`` if the window has room; whether it had."""
        if self.full(key):
            return False
        self.record(key)
        return True

    def clear(self, key: Hashable) -> None:
        """Forget the hits of ``key``."""
        self._hits.pop(key, None)

    def __len__(self) -> int:
        return len(self._hits)

    def _sweep(self) -> None:
        """Drop the keys with no hit left in the window (memory stays bounded)."""
        self._until_sweep = self.SWEEP_EVERY
        for key in list(self._hits):
            self.full(key)
