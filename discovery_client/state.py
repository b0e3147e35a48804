"""Per-target call state shared by every shell: balancer, retry budget, readiness, counters.

``TargetStates`` creates one ``TargetState`` per Target on first use, without any I/O
(grpc-go's per-target ClientConn): a Balancer subscribed to a source, starting out
"resolving". How a shell waits for the first Resolution differs (a blocking
``source.resolve`` on a request thread, an awaited one on the event loop); both hand it
to ``adopt``. The table and its states belong to one ``DiscoveryCore``
(consul_discovery.client.core).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from consul_discovery.client.balancer import Balancer
from consul_discovery.client.budget import RetryBudget
from consul_discovery.client.config import AGENT_ZONE, ServiceConfig
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.instance import Resolution
from consul_discovery.client.pauses import NO_PAUSES, PauseMeter
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.source import Listener
from consul_discovery.client.stats import TargetStats, WatchStats
from consul_discovery.client.target import Target

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from consul_discovery.client.connect import ConnectTLS

Subscribe = Callable[[Target, Listener], None]


class TargetState:
    """What a client keeps per Target: its balancer, retry budget and call counters."""

    __slots__ = ("_lock", "balancer", "budget", "config", "failed_calls", "no_instance", "target")

    def __init__(
        self, target: Target, config: ServiceConfig, balancer: Balancer, budget: RetryBudget
    ) -> None:
        self.target = target
        self.config = config
        self.balancer = balancer
        self.budget = budget
        self._lock = threading.Lock()
        self.failed_calls = 0  # counters: calling threads or the event loop, under _lock
        self.no_instance = 0

    @property
    def ready(self) -> bool:
        """True once the balancer has a first Resolution (picks need no network)."""
        return self.balancer.resolution is not None

    def adopt(self, resolution: Resolution) -> None:
        """Hand a Resolution a shell waited for to the balancer (older ones are ignored)."""
        self.balancer.update(resolution)

    @property
    def requests(self) -> int:
        """Calls made: each deposited its share in the retry budget, which counts them."""
        return self.budget.deposits

    @property
    def retries(self) -> int:
        """Retries made: each took a token from the retry budget, which counts them."""
        return self.budget.withdrawals

    def call_failed(self, *, no_instance: bool) -> None:
        """Count a call that got no response: for lack of an instance, or every attempt failed."""
        with self._lock:
            if no_instance:
                self.no_instance += 1
            else:
                self.failed_calls += 1

    def stats(self, now: float, fresh: Resolution | None, watch: WatchStats | None) -> TargetStats:
        """The typed snapshot; ``fresh`` is the source's cached Resolution (its
        ``fetched_at`` moves on unchanged polls too, so it says how fresh the set is)."""
        balancer = self.balancer
        res = balancer.resolution
        current = fresh if fresh is not None else res
        budget = self.budget
        with self._lock:
            failed_calls, no_instance = self.failed_calls, self.no_instance
        return TargetStats(
            target=self.target,
            policy=self.balancer.config.policy,
            index=res.index if res else None,
            cache_age=current.age(now) if current else None,
            stale=current.stale if current else None,
            error=current.error if current else None,
            panic=res.panic if res else None,
            held=res.held if res else (),
            ejections=balancer.ejections,
            requests=budget.deposits,
            retries=budget.withdrawals,
            retries_denied=budget.denied,
            retry_budget=budget.balance,
            failed_calls=failed_calls,
            no_instance=no_instance,
            watch=watch,
            instances=balancer.instance_stats(now),
        )


class TargetStates:
    """The per-target states of one core, created on first use; thread-safe.

    ``subscribe(target, listener)`` registers a new balancer with the source (a source
    calls it at once when it already has a Resolution). Reads are lock-free.
    """

    def __init__(
        self,
        subscribe: Subscribe,
        *,
        retry: RetryPolicy,
        ejection: EjectionPolicy,
        clock: Callable[[], float],
        rng: random.Random,
        pauses: PauseMeter = NO_PAUSES,
        connect_tls: Callable[[], ConnectTLS] | None = None,
        agent_zone: Callable[[Callable[[str | None], None]], None] | None = None,
    ) -> None:
        self._subscribe = subscribe
        # The source's reading of its agent's zone (AGENT_ZONE configs); None: it has none.
        self._agent_zone = agent_zone
        self.connect_tls = connect_tls or _no_connect  # the caller's mesh identity (Connect)
        self._pauses = pauses
        self.retry = retry
        self.ejection = ejection
        self._clock = clock
        self._rng = rng
        self._lock = threading.Lock()  # guards creation of entries and closed
        self._states: dict[Target, TargetState] = {}  # written under _lock; read lock-free
        self.closed = False  # set under _lock

    def get(self, target: Target, config: ServiceConfig) -> TargetState:
        """The Target's state, created on first use without any I/O.

        A Target asked for with another load-balancing policy than its balancer has (a
        discovery chain's resolver sets one; the chain gone, the service's own again)
        switches its balancer to it: one balancer, and load, per Target.
        """
        state = self._states.get(target)
        if state is not None:
            if state.balancer.config.policy != config.policy:
                state.balancer.set_policy(config.policy)
            return state
        with self._lock:  # held for a few allocations only: never across the network
            state = self._states.get(target)
            if state is not None:
                return state
            if self.closed:
                raise RuntimeError(f"client is closed (target {target})")
            balancer = Balancer(
                target.service,
                config,
                ejection=self.ejection,
                clock=self._clock,
                rng=self._rng,
                pauses=self._pauses,
            )
            if target.connect:  # dialled over mTLS (consul_discovery.client.connect)
                connect = self.connect_tls()
                balancer.redial(
                    connect.dial_for(target.service, target.datacenter, balancer.redial)
                )
            budget = RetryBudget(
                self.retry.budget_ratio, self.retry.budget_min_per_second, clock=self._clock
            )
            state = TargetState(target, config, balancer, budget)
            self._states[target] = state
        self._subscribe(target, balancer.update)
        if config.zone is AGENT_ZONE:
            self._want_agent_zone(balancer)
        return state

    def _want_agent_zone(self, balancer: Balancer) -> None:
        if self._agent_zone is None:
            log.warning(
                "%s: zone=AGENT_ZONE but this client's source does not read a Consul "
                "agent: no zone preference (name the zone instead)",
                balancer.service,
            )
            return
        self._agent_zone(balancer.set_zone)

    def states(self) -> list[TargetState]:
        """A snapshot of the states, in creation order."""
        return list(self._states.values())

    def close(self) -> bool:
        """Refuse new targets from now on; True the first time (the caller cleans up)."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            return True


def _no_connect() -> ConnectTLS:
    raise RuntimeError("this client core was built without Connect support")
