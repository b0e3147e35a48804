"""DiscoveryCore: one transport-free core per client, shared by every shell.

After grpc-go's ClientConn per target. The core owns everything about calling services
by name that does not depend on how bytes move:

* configuration: ``services`` (a ServiceConfig per name), ``default_config``, the retry
  and ejection policies, ``resolve_timeout``;
* the per-Target state table (consul_discovery.client.state), created without I/O and
  "resolving" until its first Resolution; each service maps to one Target
  (``Target.of(name, config)``) and one precomputed Route (consul_discovery.client.route),
  or, when Consul has a discovery chain for it (asked of the source's ``watch_chain``),
  one precomputed Route per route x split leg of the chain
  (consul_discovery.client.chain.routes);
* readiness: how long a call may wait for a first resolution (``first_wait``; the shell
  only blocks or awaits the source for that long and hands the answer to the state);
* the attempt plan (consul_discovery.client.attempt; its loop: .steps);
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

from consul_discovery.client.arguments import instance_of, per_name, seconds
from consul_discovery.client.attempt import AttemptPlan
from consul_discovery.client.chain.decide import ChainRouter, Decider, plain_router
from consul_discovery.client.chain.gate import ChainGate
from consul_discovery.client.chain.report import ChainReporter
from consul_discovery.client.chain.routes import chain_routes, follows_chain
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.connect import ConnectTLS
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.instance import Resolution
from consul_discovery.client.pauses import GC_PAUSES, NO_PAUSES, PauseMeter
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.route import RequestView, Route
from consul_discovery.client.state import TargetState, TargetStates
from consul_discovery.client.stats import ClientStats, WatchStats
from consul_discovery.client.target import Target
from consul_discovery.extras import missing

if TYPE_CHECKING:
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
    ``clock`` is the real monotonic clock; none with an injected one). The knobs every
    shell passes through are checked here, once (consul_discovery.client.arguments): a
    wrong one raises TypeError or ValueError naming it.
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
        self.source = source
        self.services: Mapping[str, ServiceConfig] = per_name("services", services, ServiceConfig)
        self.default_config = instance_of("default_config", default_config, ServiceConfig)
        self.retry = instance_of("retry", retry, RetryPolicy)
        self.ejection = instance_of("ejection", ejection, EjectionPolicy)
        self.resolve_timeout = seconds("resolve_timeout", resolve_timeout)
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
            agent_zone=getattr(source, "agent_zone", None),  # a Consul source's reader
        )
        # The caller's mesh identity for Connect targets (consul_discovery.client.connect):
        # ``identity`` (a ServiceIdentity) or, on first use, the process's of SERVICE_NAME.
        self.connect = ConnectTLS(identity)
        # service -> its Route, or its chain's Routes behind the chain's matching; written
        # under _lock (first use, a new chain on the source's loop), read lock-free
        self._routes: dict[str, Route | Decider[Route]] = {}
        self._plain: dict[str, Route] = {}  # service -> its plain Route; as _routes
        self._chains: dict[str, ChainRouter] = {}  # service -> chain in use; as _routes
        # service -> its gate while its first router is awaited (chain/gate.py); written
        # under _lock, read lock-free (empty once every chain is known: one falsy check)
        self.gates: dict[str, ChainGate] = {}
        self._reporter = ChainReporter()
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
        """Where a call to ``service`` goes: its Targets' states in order, retry policy,
        hash policy and request changes.

        A service without a discovery chain has a single Route, made on first use without
        I/O and reused (a dict read). A service with one has a Route per route x split
        leg of its chain, precomputed when the chain arrives; ``request`` picks one (its
        matches, then a weighted draw). Without ``request``, the plain Route.
        """
        route = self._routes.get(service)
        if route is None:
            route = self._first_route(service)
        if type(route) is Route:
            return route
        if request is None:
            return self._plain[service]
        return route.decide(request)  # type: ignore[union-attr, no-any-return]

    def _first_route(self, service: str) -> Route | Decider[Route]:
        config = self.config_for(service)
        state = self._states.get(Target.of(service, config), config)
        with self._lock:  # the client's retry policy, resolved once for the route
            plain = self._plain.setdefault(service, Route(service, (state,), self.retry))
            self._routes.setdefault(service, plain)
        watch_chain = getattr(self.source, "watch_chain", None)
        if watch_chain is not None and follows_chain(config):
            with self._lock:
                self.gates.setdefault(service, ChainGate())
            self._chain_once_resolved(service, state.target, watch_chain)
        return self._routes[service]

    def chain_gate(self, service: str, state: TargetState) -> ChainGate | None:
        """The gate a call to ``service`` waits at before it is routed (None: its chain,
        or that it has none, is known; chain/gate.py). ``state`` is the plain Target's,
        resolved: while Consul does not answer for it (nothing, or a stale set such as
        the snapshot's) no chain can come, and the gate opens at once."""
        gates = self.gates
        if not gates:
            return None
        gate = gates.get(service)
        if gate is None:
            return None
        resolution = state.balancer.resolution
        if not gate.open and (resolution is None or resolution.stale):
            gate.release()
        if gate.open:
            with self._lock:
                gates.pop(service, None)
            return None
        return gate

    def _chain_once_resolved(
        self, service: str, target: Target, watch_chain: Callable[..., None]
    ) -> None:
        """Ask the source for ``service``'s chain once Consul first answered for it (so a
        Consul that does not answer gets no more connections than before)."""
        once = [watch_chain]  # list.pop is atomic: the first answer asks, no other

        def resolved(_resolution: Resolution) -> None:
            try:
                ask = once.pop()
            except IndexError:
                return
            unsubscribe = getattr(self.source, "unsubscribe", None)
            if unsubscribe is not None:
                unsubscribe(target, resolved)
            ask(service, lambda router: self._on_chain(service, router))

        self.source.subscribe(target, resolved)

    def _on_chain(self, service: str, router: ChainRouter) -> None:
        """A new chain of ``service`` (on the source's loop): its Routes, made once here;
        then the calls held at its gate go on."""
        try:
            self._install(service, router)
        finally:
            with self._lock:
                gate = self.gates.pop(service, None)
            if gate is not None:
                gate.release()

    def _install(self, service: str, router: ChainRouter) -> None:
        """``service``'s Routes for ``router`` (or its plain Route)."""
        self._reporter.report(router)
        plain = self._plain[service]
        if router.plain:
            self._states.get(plain.primary.target, self.config_for(service))  # its own policy
            with self._lock:
                self._routes[service] = plain
                self._chains.pop(service, None)
            return
        config = self.config_for(service)
        try:
            decider = chain_routes(router, config, self.retry, self._states.get)
        except ValueError as exc:  # e.g. a Target the client cannot express
            self._reporter.report(plain_router(service, f"cannot route by it: {exc}"))
            with self._lock:
                self._routes[service] = plain
            return
        prime = getattr(self.source, "prime", None)
        if prime is not None:  # every target's watch runs before a call needs it
            for route in decider.values():
                for state in route.states:
                    if not state.ready:
                        prime(state.target)
        with self._lock:
            self._routes[service] = decider
            self._chains[service] = router

    def chain(self, service: str) -> ChainRouter | None:
        """The chain ``service`` is routed by now (None: called as a plain service)."""
        return self._chains.get(service)

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

    def plan(
        self,
        route: Route,
        request: RequestView,
        replayable: bool,
        retry: RetryPolicy | None,
        started: float,
    ) -> AttemptPlan:
        """The call's plan (consul_discovery.client.attempt), for its attempt loop
        (consul_discovery.client.steps).

        ``retry`` overrides the route's and the client's policy for this call;
        ``replayable`` is false for a body that cannot be sent twice; ``started`` is when
        the call began (its deadline runs from it). A closed client plans nothing:
        RuntimeError, as for a service it never called (its pools and watches are gone).
        """
        if self._states.closed:
            raise RuntimeError(f"client is closed (service {route.service!r})")
        hash_policy = route.hash_policy
        return AttemptPlan(
            route,
            retry or route.retry or self.retry,
            request,
            replayable,
            self.clock,
            self.rng,
            started,
            None if hash_policy is None else hash_policy(request),
        )

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
            registry = self._register(_new_registry())
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


def _new_registry() -> CollectorRegistry:
    """An empty Prometheus registry; without prometheus_client, the library's error that
    names the extra to install (consul_discovery.extras)."""
    try:
        from prometheus_client import CollectorRegistry
    except ImportError as exc:
        raise missing("the discovery client's metrics_registry", "prometheus", exc) from exc
    return CollectorRegistry()
