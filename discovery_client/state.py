"""Per-service call state shared by every shell: balancer, retry budget, readiness, counters.

``ServiceStates`` creates one ``ServiceState`` per service on first use, without any
I/O (grpc-go's per-target ClientConn): a Balancer subscribed to a source, starting out
"resolving". The same table serves the threaded ServiceClient (and through it the
requests adapter and the sync httpx transport) and the asyncio httpx transport; only
how a shell waits for the first Resolution differs (a blocking ``source.resolve`` on a
request thread, an awaited one on the event loop), and both hand it to ``adopt``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from consul_discovery.client.balancer import Balancer
from consul_discovery.client.budget import RetryBudget
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.instance import Resolution
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.source import Listener

Subscribe = Callable[[str, Listener], None]


class ServiceState:
    """What a client keeps per service: its balancer, retry budget and counters."""

    def __init__(self, balancer: Balancer, budget: RetryBudget) -> None:
        self.balancer = balancer
        self.budget = budget
        self.lock = threading.Lock()
        self.requests = 0  # counters: calling threads or the event loop, under lock
        self.retries = 0
        self.failed_calls = 0
        self.no_instance = 0

    @property
    def ready(self) -> bool:
        """True once the balancer has a first Resolution (picks need no network)."""
        return self.balancer.resolution is not None

    def adopt(self, resolution: Resolution) -> None:
        """Hand a Resolution a shell waited for to the balancer (older ones are ignored)."""
        self.balancer.update(resolution)

    def count(self, field: str) -> None:
        """Add one to the counter ``field``."""
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)

    def stats(self) -> dict[str, Any]:
        """The balancer's snapshot plus this service's call counters."""
        snap = self.balancer.stats()
        snap.update(
            requests=self.requests,
            retries=self.retries,
            retries_denied=self.budget.denied,
            retry_budget=self.budget.balance,
            failed_calls=self.failed_calls,
            no_instance=self.no_instance,
        )
        return snap


class ServiceStates:
    """The per-service states of one client, created on first use; thread-safe.

    ``subscribe(service, listener)`` registers a new balancer with the source (a source
    calls it at once when it already has a Resolution). Reads are lock-free.
    """

    def __init__(
        self,
        config_for: Callable[[str], ServiceConfig],
        subscribe: Subscribe,
        *,
        retry: RetryPolicy,
        ejection: EjectionPolicy,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.config_for = config_for
        self._subscribe = subscribe
        self.retry = retry
        self.ejection = ejection
        self._clock = clock
        self._rng = rng
        self._lock = threading.Lock()  # guards creation of entries and closed
        self._states: dict[str, ServiceState] = {}  # written under _lock; read lock-free
        self.closed = False  # set under _lock

    def get(self, service: str) -> ServiceState:
        """The service's state, created on first use without any I/O."""
        state = self._states.get(service)
        if state is not None:
            return state
        with self._lock:  # held for a few allocations only: never across the network
            state = self._states.get(service)
            if state is not None:
                return state
            if self.closed:
                raise RuntimeError(f"client is closed (service {service!r})")
            balancer = Balancer(
                service,
                self.config_for(service),
                ejection=self.ejection,
                clock=self._clock,
                rng=self._rng,
            )
            budget = RetryBudget(
                self.retry.budget_ratio, self.retry.budget_min_per_second, clock=self._clock
            )
            state = ServiceState(balancer, budget)
            self._states[service] = state
        self._subscribe(service, balancer.update)
        return state

    def items(self) -> list[tuple[str, ServiceState]]:
        """A snapshot of (service, state) pairs."""
        return list(self._states.items())

    def close(self) -> bool:
        """Refuse new services from now on; True the first time (the caller cleans up)."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            return True
