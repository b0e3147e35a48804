"""Time this process spent stopped in garbage collection: never an instance's latency.

CPython's cyclic garbage collector stops every thread while it runs, and a full
collection of a service's heap takes 100-300 ms on a small loaded machine. Every attempt
in flight then finishes that much later, on every instance at once: the balancer would
take the pause for the instances' latency, and peak-EWMA keeps a peak for seconds. An
asyncio client makes enough garbage (tasks, futures, cancel scopes) to trigger full
collections mid-load where the threaded one rarely does, so this was one reason the async
transport sent a slow instance many times the share the requests client sent it.

``GC_PAUSES.total`` is the running total of those stops (seconds, perf_counter), kept by
a ``gc.callbacks`` hook installed at import. The Balancer subtracts what accrued between
an attempt's start and its end from its latency (balancer.Balancer: ``pauses``).
"""

from __future__ import annotations

import gc
import time
from typing import Protocol


class PauseMeter(Protocol):
    """Anything with ``total``: seconds the process has been stopped so far."""

    total: float


class GcPauses:
    """The total time the garbage collector has kept this process stopped, so far."""

    def __init__(self) -> None:
        # Written only by the gc callback, which runs with the GIL held in whichever
        # thread triggered the collection; read lock-free (a float, replaced whole).
        self.total = 0.0
        self._started: float | None = None

    def callback(self, phase: str, _info: dict[str, int]) -> None:
        """``gc.callbacks`` hook: time each collection."""
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.total += time.perf_counter() - self._started
            self._started = None


class NoPauses:
    """A pause meter that never moves (an injected clock; the Balancer's default)."""

    total = 0.0


GC_PAUSES = GcPauses()
gc.callbacks.append(GC_PAUSES.callback)
NO_PAUSES = NoPauses()
