"""The one jittered exponential backoff, as a tenacity wait strategy (random injected).

Shared by the registrar (re-registering while the agent is away), the discovery watch
(polling a failing agent) and the client's retries; it lives here, next to how Consul is
reached, so neither ``registry`` nor ``consul_discovery.client`` imports the other.

The step after ``attempt`` failures (1-based) is ``min(cap, initial * 2**(attempt-1))``;
the jitter spreads a crowd of clients:

- ``"equal"``: ``step/2 + uniform(0, step/2)``: never less than half the step, so a
  crowd does not hammer a recovering agent (the registrar and the watch);
- ``"full"``: ``uniform(0, step)``: the shortest mean wait (AWS's analysis), for
  retries on another instance, which do not pile onto one server.
"""

from __future__ import annotations

import random
from typing import Literal

from tenacity import RetryCallState
from tenacity.wait import wait_base

Jitter = Literal["equal", "full"]


class JitterBackoff(wait_base):
    """Capped exponential backoff with equal or full jitter (see the module docstring)."""

    def __init__(
        self,
        initial: float = 0.2,
        cap: float = 3.0,
        *,
        jitter: Jitter = "equal",
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"need 0 < initial <= cap; got initial={initial!r} cap={cap!r}")
        if jitter not in ("equal", "full"):
            raise ValueError(f"jitter must be 'equal' or 'full'; got {jitter!r}")
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.rng = rng or random.Random()

    def step(self, attempt: int) -> float:
        """The un-jittered wait after ``attempt`` (1-based) failures."""
        return min(self.cap, self.initial * 2 ** min(max(attempt, 1) - 1, 60))

    def delay(self, attempt: int, uniform: float | None = None) -> float:
        """Seconds to wait after ``attempt`` failures; ``uniform`` in [0, 1) (default: rng)."""
        u = self.rng.random() if uniform is None else uniform
        step = self.step(attempt)
        if self.jitter == "full":
            return step * u
        return step / 2 + step / 2 * u

    def __call__(self, retry_state: RetryCallState) -> float:
        """Seconds to wait before the next attempt (tenacity's wait protocol)."""
        return self.delay(retry_state.attempt_number)
