"""Capped exponential backoff with jitter, as a tenacity wait strategy (random injected)."""

from __future__ import annotations

import random

from tenacity import RetryCallState
from tenacity.wait import wait_base


class CappedJitterBackoff(wait_base):
    """Wait ``b/2 + uniform(0, b/2)`` where ``b = min(cap, initial * 2**(attempt-1))``.

    "Equal jitter": never less than half the exponential step (so a crowd of instances
    does not hammer a recovering agent), never more than ``cap`` (so recovery is noticed
    within ``cap`` seconds).
    """

    def __init__(self, initial: float = 0.2, cap: float = 3.0, rng: random.Random | None = None):
        if initial <= 0 or cap < initial:
            raise ValueError("need 0 < initial <= cap")
        self.initial = initial
        self.cap = cap
        self.rng = rng or random.Random()

    def step(self, attempt: int) -> float:
        """The un-jittered wait after ``attempt`` (1-based) failures."""
        return min(self.cap, self.initial * 2 ** min(attempt - 1, 60))

    def __call__(self, retry_state: RetryCallState) -> float:
        """Seconds to wait before the next attempt."""
        base = self.step(retry_state.attempt_number)
        return base / 2 + self.rng.uniform(0, base / 2)
