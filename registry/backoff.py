"""The registrar's backoff: the shared ``consul_discovery.connection.backoff`` with equal jitter."""

from __future__ import annotations

import random

from consul_discovery.connection.backoff import JitterBackoff


class CappedJitterBackoff(JitterBackoff):
    """Equal-jitter ``JitterBackoff``: waits in ``[b/2, b]``, ``b = min(cap, initial*2**(n-1))``."""

    def __init__(self, initial: float = 0.2, cap: float = 3.0, rng: random.Random | None = None):
        super().__init__(initial, cap, jitter="equal", rng=rng)
