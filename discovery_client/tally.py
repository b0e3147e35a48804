"""A count that calls add to without a lock (one per call, on every call's path), read exactly.

Counting under a lock costs every call an acquire and a release, which on a busy process
is far more than the increment (the lock's memory is cold by the time the next call
comes). A ``Tally`` adds with one tick of an ``itertools.count``, which is atomic (a
single C call that holds the GIL throughout). Reading ticks the same count, so ``value``
subtracts the ticks reads took; reads are few (stats, a retry) and serialized by one
lock shared by every Tally.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

_READS = threading.Lock()  # serializes every Tally's reads (never held by an add)


class Tally:
    """A count of events: ``add()`` takes no lock; ``value`` is exact."""

    __slots__ = ("_reads", "_tick", "add")

    def __init__(self) -> None:
        tick = itertools.count().__next__
        #: Count one event (any thread, no lock).
        self.add: Callable[[], object] = tick
        self._tick = tick
        self._reads = 0  # ticks taken by reads; under _READS

    @property
    def value(self) -> int:
        """Events counted so far."""
        with _READS:
            made = self._tick() - self._reads
            self._reads += 1
        return made

    def __repr__(self) -> str:
        """The count."""
        return f"Tally({self.value})"
