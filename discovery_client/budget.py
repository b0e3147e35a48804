"""A retry budget: retries may not exceed a fraction of requests plus a small floor.

A token bucket (after Finagle's RetryBudget and Envoy's retry budgets): every request
deposits ``ratio`` tokens, time deposits ``min_per_second`` tokens per second, and every
retry withdraws one. The balance is capped at ``burst`` (default: one second of the
floor plus nothing banked from ratio deposits beyond that), so a long healthy stretch
cannot save up for a retry storm. Over any stretch of R requests and T seconds,
retries ≤ burst + ratio × R + min_per_second × T.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from consul_discovery.client.tally import Tally


class RetryBudget:
    """Token bucket limiting retries for one service; thread-safe."""

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.burst = burst if burst is not None else max(1.0, min_per_second)
        self._clock = clock
        self._lock = threading.Lock()
        self._balance = self.burst  # request threads, under _lock
        self._stamp = clock()  # last refill time; under _lock
        self.denied = 0  # retries refused; under _lock
        self.withdrawals = 0  # retries allowed; under _lock
        self._deposits = Tally()
        self._folded = 0  # deposits already in _balance; under _lock
        #: Record one request (a first attempt): no lock and no clock read. Deposits are
        #: added to the balance when it is next read, all at once, which gives the balance
        #: adding each in turn would: every term is positive, so capping before or after
        #: another gives the same (min(b, min(b, x) + y) = min(b, x + y)).
        self.deposit: Callable[[], object] = self._deposits.add

    @property
    def deposits(self) -> int:
        """Requests recorded so far."""
        return self._deposits.value

    def _refill(self, now: float) -> None:
        made = self._deposits.value
        if made > self._folded:
            self._balance = min(self.burst, self._balance + (made - self._folded) * self.ratio)
            self._folded = made
        elapsed = now - self._stamp
        if elapsed > 0:
            self._balance = min(self.burst, self._balance + elapsed * self.min_per_second)
            self._stamp = now

    def try_withdraw(self) -> bool:
        """Take one token for a retry; False (and count a denial) if the budget is spent."""
        with self._lock:
            self._refill(self._clock())
            if self._balance >= 1.0 - 1e-9:  # five deposits of 0.2 make a token
                self._balance -= 1.0
                self.withdrawals += 1
                return True
            self.denied += 1
            return False

    @property
    def balance(self) -> float:
        """Tokens available now (for stats)."""
        with self._lock:
            self._refill(self._clock())
            return self._balance
