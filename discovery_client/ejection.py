"""Passive outlier ejection rules, as one frozen value (after Envoy's outlier detection).

An instance that fails ``consecutive_failures`` calls in a row (connect errors, timeouts
or 5xx responses) sits out ``base_time × n`` seconds, capped at ``max_time``, where n
counts its ejections (reset once it has gone ``max_time`` without one). At most
``max_percent`` of the pool is ejected at once, but one instance may always be ejected
from a pool of two or more, so a single bad instance of three is never stuck in rotation.
It comes back when its time is up, or at once when Consul reports it re-registered
(it left the passing set and came back, or its address changed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from consul_discovery.client.figures import amount, seconds, whole


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    """When to take a failing instance out of rotation, and for how long."""

    consecutive_failures: int = 5
    base_time: float = 30.0
    max_time: float = 300.0
    max_percent: float = 50.0
    enabled: bool = True

    def __post_init__(self) -> None:
        whole("EjectionPolicy consecutive_failures", self.consecutive_failures, low=1)
        amount("EjectionPolicy max_percent", self.max_percent, high=100.0)
        seconds("EjectionPolicy base_time", self.base_time, positive=True)
        seconds("EjectionPolicy max_time", self.max_time, positive=True)
        if self.max_time < self.base_time:
            raise ValueError("need 0 < base_time <= max_time")

    def max_ejected(self, pool_size: int) -> int:
        """How many of ``pool_size`` instances may be ejected at the same time."""
        if not self.enabled or pool_size < 2:
            return 0
        allowed = math.floor(pool_size * self.max_percent / 100.0)
        return min(pool_size - 1, max(1, allowed)) if self.max_percent > 0 else 0

    def duration(self, ejection_number: int) -> float:
        """Seconds the ``ejection_number``-th ejection (1-based) lasts."""
        return min(self.base_time * max(1, ejection_number), self.max_time)
