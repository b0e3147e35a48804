"""A compiled chain as the client core's Routes: one Route per route x split leg.

``chain_routes(router, ...)`` is called once per version of a service's chain (on the
watch's thread, never per call): every ``Decision`` of the router becomes a core
``Route``, made here once, and the result is a ``Decider[Route]`` that a call matches
(router matches, then a weighted draw among split legs) to get its precomputed Route.

What a Decision becomes:

- its targets (resolver target, then failover targets in order) become ``Target``s:
  the service, the datacenter when it is not the agent's, a subset's ``filter`` and
  ``only_passing``; their states come from the core (``state_of``), so a subset has its
  own health watch and balancer, and the attempt plan fails over along them;
- the route's request timeout becomes the call's deadline, its retry settings the
  attempts and the statuses retried (``retry_policy``); connection failures stay
  retried, and a request that may have been acted on is resent only when the method is
  idempotent (the client's rule, stricter than Envoy's);
- the connect timeout (target's, else resolver's) caps each attempt's connect;
- a ``ring_hash``/``maglev`` policy picks by the call's hash key, computed once per call
  from the hash policies (``Route.hash_policy``); any other Consul policy picks with the
  same policy of ours (``policy_config``);
- a prefix rewrite or header modifiers become the Route's ``changes`` (``ChainChanges``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from consul_discovery.client.chain.changes import ChainChanges
from consul_discovery.client.chain.decide import ChainRouter, Decider, Decision
from consul_discovery.client.chain.model import ChainRetry, ChainTarget
from consul_discovery.client.config import POLICIES, ServiceConfig
from consul_discovery.client.retry import RetryPolicy
from consul_discovery.client.route import Route
from consul_discovery.client.state import TargetState
from consul_discovery.client.target import Target

StateOf = Callable[[Target, ServiceConfig], TargetState]


def follows_chain(config: ServiceConfig) -> bool:
    """True unless the service's own config already says which instances to call (a
    datacenter, filter, tag or prepared query): that choice is kept, no chain is watched."""
    return not (config.datacenter or config.filter or config.tag or config.prepared_query)


def target_of(target: ChainTarget, connect: bool = False) -> Target:
    """The client's Target for one chain target (service, datacenter, subset filter);
    ``connect``: the service's ServiceConfig calls it through the mesh, so every target
    of its chain is reached over Connect mTLS too."""
    return Target(
        target.service,
        datacenter=target.remote_datacenter,
        filter=target.filter,
        only_passing=target.only_passing,
        connect=connect,
    )


def policy_config(config: ServiceConfig, decision: Decision) -> ServiceConfig:
    """``config`` with the resolver's load-balancer policy, when it names one of ours."""
    policy = decision.load_balancer.policy
    if not policy or policy == config.policy or policy not in POLICIES:
        return config
    return dataclasses.replace(config, policy=policy)


def retry_policy(base: RetryPolicy, decision: Decision) -> RetryPolicy:
    """``base`` with the route's request timeout (as the deadline) and retry settings."""
    changes: dict[str, object] = {}
    if decision.request_timeout:
        changes["deadline"] = decision.request_timeout
    retry: ChainRetry | None = decision.retry
    if retry is not None:
        changes["max_attempts"] = retry.max_attempts
        changes["retry_statuses"] = frozenset(s for s in range(400, 600) if retry.retries_status(s))
    return dataclasses.replace(base, **changes) if changes else base  # type: ignore[arg-type]


def decision_route(
    service: str, decision: Decision, config: ServiceConfig, retry: RetryPolicy, state_of: StateOf
) -> Route:
    """The Route of one Decision (see the module)."""
    chosen = policy_config(config, decision)
    states = tuple(state_of(target_of(t, config.connect), chosen) for t in decision.targets)
    hashing = chosen.policy in ("ring_hash", "maglev") and decision.hash_policies
    connect = decision.target.connect_timeout or decision.connect_timeout
    name = f"route {decision.route}" if decision.route is not None else "default"
    if decision.split is not None:
        name += f", split {decision.split}"
    return Route(
        service,
        states,
        retry_policy(retry, decision),
        decision.hash_key if hashing else None,
        ChainChanges.of(decision),
        connect,
        f"{name} -> {decision.target.id}",
    )


def chain_routes(
    router: ChainRouter, config: ServiceConfig, retry: RetryPolicy, state_of: StateOf
) -> Decider[Route]:
    """Every route x split leg of ``router`` as a Route, behind the router's matching."""
    service = router.service
    return router.map(lambda d: decision_route(service, d, config, retry, state_of))
