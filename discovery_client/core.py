"""DiscoveryCore: one transport-free core per client, shared by every shell.

After grpc-go's ClientConn per target. The core owns everything about calling services
by name that does not depend on how bytes move:

* configuration: ``services`` (a ServiceConfig per name), ``default_config``, the retry
  and ejection policies, ``resolve_timeout``;
* the per-Target state table (consul_discovery.client.state), created without I/O and
  "resolving" until its first Resolution; each service maps to one Target
  (``Target.of(name, config)``) and one precomputed Route (consul_discovery.client.route);
* readiness: how long a call may wait for a first resolution (``first_wait``; the shell
  only blocks or awaits the source for that long and hands the answer to the state);
* the attempt plan and its loop (consul_discovery.client.attempt and .steps);
* a typed, frozen stats snapshot (consul_discovery.client.stats) and, when asked for,
  a Prometheus registry with a collector over it (prometheus_client is optional: the
  core imports without it).

It never does network I/O and never blocks: of the source it uses only what needs no
I/O (``subscribe``, ``cached``, ``watch_stats``). Shells (consul_discovery.client.drivers
and the transports) wait, send, classify their transport's errors and sleep.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.connect import ConnectTLS
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.instance import Resolution
from consul_discovery.client.pauses import GC_PAUSES, NO_PAUSES, PauseMeter
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.route import RequestView, Route
from consul_discovery.client.state import TargetState, TargetStates
from consul_discovery.client.stats import ClientStats, WatchStats
from consul_discovery.client.steps import Classify, Step, attempt_steps
from consul_discovery.client.target import Target

if TYPE_CHECKING:
    from collections.abc import Generator

    from prometheus_client import CollectorRegistry

# Frozen values, so shared defaults are safe.
DEFAULT_CONFIG = ServiceConfig()
DEFAULT_RETRY = RetryPolicy()
DEFAULT_EJECTION = EjectionPolicy()


class DiscoveryCore:
    """Config, per-Target state, readiness, attempt plans and stats of one client (no I/O).

    ``source`` is the client's InstanceSource (threaded or asyncio): the core subscribes
    each new Target's balancer to it and reads its cache for stats, nothing else.
    ``identity`` is the caller's mesh identity for Connect targets (default: the
    process's of ``SERVICE_NAME``, leased on first use). ``pauses`` counts the time the
    process was stopped, left out of every
    latency (default: garbage-collection stops, consul_discovery.client.pauses, when
    ``clock`` is the real monotonic clock; none with an injected one).
    """

    def __init__(
        self,
        source: Any,
        *,
        services: Mapping[str, ServiceConfig] | None = None,
        default_config: ServiceConfig = DEFAULT_CONFIG,
        retry: RetryPolicy = DEFAULT_RETRY,
        ejection: EjectionPolicy = DEFAULT_EJECTION,
        resolve_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        registry: CollectorRegistry | None = None,
        pauses: PauseMeter | None = None,
        identity: Any = None,
    ) -> None:
        if resolve_timeout < 0:
            raise ValueError(f"resolve_timeout must be >= 0 seconds; got {resolve_timeout!r}")
        self.source = source
        self.services: Mapping[str, ServiceConfig] = dict(services or {})
        self.default_config = default_config
        self.retry = retry
        self.ejection = ejection
        self.resolve_timeout = resolve_timeout
        self.clock = clock
        self.rng = rng or random.Random()
        if pauses is None:  # GC stops leave latencies alone; an injected clock has none
            pauses = GC_PAUSES if clock is time.monotonic else NO_PAUSES
        self._states = TargetStates(
            source.subscribe,
            retry=retry,
            ejection=ejection,
            clock=clock,
            rng=self.rng,
            pauses=pauses,
            connect_tls=lambda: self.connect,
        )
        # The caller's mesh identity for Connect targets (consul_discovery.client.connect):
        # ``identity`` (a ServiceIdentity) or, on first use, the process's of SERVICE_NAME.
        self.connect = ConnectTLS(identity)
        # service -> its Route; written under _lock on first use, read lock-free
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()  # guards _routes writes and _registry creation
        self._registry: CollectorRegistry | None = None  # under _lock
        if registry is not None:
            self._register(registry)

    # ---- configuration, targets and routes ---------------------------------------

    def config_for(self, service: str) -> ServiceConfig:
        """The ServiceConfig used for ``service`` (its entry in ``services`` or the default)."""
        return self.services.get(service, self.default_config)

    def target_for(self, service: str) -> Target:
        """The Target a call to ``service`` goes to (today: one per service)."""
        return Target.of(service, self.config_for(service))

    def route(self, service: str, request: RequestView | None = None) -> Route:
        """Where a call to ``service`` goes: its Targets' states in order, and retry policy.

        ``request`` is what routing by a discovery chain will match on; a service without
        one has a single Route, made on first use without I/O and reused (a dict read).
        """
        route = self._routes.get(service)
        if route is None:
            config = self.config_for(service)
            state = self._states.get(Target.of(service, config), config)
            with self._lock:  # the client's retry policy, resolved once for the route
                route = self._routes.setdefault(service, Route(service, (state,), self.retry))
        return route

    def state(self, service: str) -> TargetState:
        """The state of ``service``'s Target, created on first use without any I/O."""
        return self.route(service).primary

    # ---- readiness and the call's plan --------------------------------------------

    def first_wait(self, started: float, retry: RetryPolicy | None = None) -> float:
        """How long a call that began at ``started`` may wait for a first resolution.

        Bounded by ``resolve_timeout`` and the call's deadline (which runs from
        ``started``). Many callers may wait at once: the source answers all of them from
        one watch (and from its cached error while it retries with backoff).
        """
        policy = retry or self.retry
        budget = min(self.resolve_timeout, policy.deadline)
        return max(0.0, budget - (self.clock() - started))

    def steps(
        self,
        route: Route,
        request: RequestView,
        errors: tuple[type[BaseException], ...],
        classify: Classify,
        *,
        replayable: bool,
        retry: RetryPolicy | None = None,
        started: float | None = None,
    ) -> tuple[AttemptPlan, Generator[Step, Any, None]]:
        """The call's plan and its attempt loop (consul_discovery.client.steps).

        ``retry`` overrides the route's and the client's policy for this call;
        ``replayable`` is false for a body that cannot be sent twice.
        """
        hash_policy = route.hash_policy
        plan = AttemptPlan(
            route,
            retry or route.retry or self.retry,
            request.method,
            request.headers,
            replayable=replayable,
            clock=self.clock,
            rng=self.rng,
            started=started,
            hash_key=None if hash_policy is None else hash_policy(request),
        )
        return plan, attempt_steps(plan, errors, classify)

    # ---- observability and lifecycle ----------------------------------------------

    def stats(self) -> ClientStats:
        """A typed snapshot of every Target used so far (never waits, no I/O)."""
        now = self.clock()
        return ClientStats(
            tuple(
                state.stats(now, self._cached(state.target), self._watch(state.target))
                for state in self._states.states()
            )
        )

    def _cached(self, target: Target) -> Resolution | None:
        # The source's cached Resolution also moves its fetched_at on every unchanged
        # poll, so it is what says how fresh the set is.
        # (A source of your own may leave out ``cached`` and ``watch_stats``: its stats
        # then have no freshness or watch counts.)
        cached = getattr(self.source, "cached", None)
        return cached(target) if cached is not None else None

    def _watch(self, target: Target) -> WatchStats | None:
        watch_stats = getattr(self.source, "watch_stats", None)
        return watch_stats(target) if watch_stats is not None else None

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """A Prometheus registry of this core's own with a collector over ``stats()``,
        made on first use (needs prometheus_client: the ``prometheus`` extra)."""
        with self._lock:
            registry = self._registry
        if registry is None:
            from prometheus_client import CollectorRegistry

            registry = self._register(CollectorRegistry())
        return registry

    def _register(self, registry: CollectorRegistry) -> CollectorRegistry:
        from consul_discovery.client.metrics import ClientCollector

        with self._lock:
            if self._registry is not None:
                return self._registry
            registry.register(ClientCollector(self))
            self._registry = registry
            return registry

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._states.closed

    def close(self) -> bool:
        """Refuse new Targets from now on; True the first time (the caller then closes
        what it owns: source, session, pools; a leased mesh identity is given back)."""
        first = self._states.close()
        if first:
            self.connect.close()
        return first
