"""Where one request goes under a compiled chain: route, split, resolver target, failover.

``compile_chain`` turns a Chain into a ``ChainRouter`` once per chain version (never per
call): every route's match is compiled into one predicate and every possible outcome
(route x split leg) into one frozen ``Decision``, so ``decide`` only tests predicates
in order, draws a split leg when there is one, and returns a precomputed value (no
allocation). A chain Consul marks as ``default`` (no router, splitter or resolver entry)
is ``plain``: the caller keeps its plain-service fast path and never calls ``decide``.
A chain with a feature the client does not honour, or one that cannot be compiled (a
regex Python cannot read), is ``plain`` too, with ``problems`` saying why, so the
caller reports it once (``report.ChainReporter``) and calls the plain service.

What a Decision carries, as Consul renders it for Envoy (``agent/xds/routes.go``):

- ``targets``: the resolver's target, then its failover targets in order;
- ``request_timeout``: the route destination's ``RequestTimeout``, else the resolver's
  (Envoy applies the resolver's only when the resolver is the start node; here it always
  applies when the route sets none, which is what an operator setting it expects);
- ``connect_timeout`` of the primary target; ``idle_timeout`` of the route;
- ``retry`` from the route (None: the client's own retry policy applies);
- ``prefix_rewrite``: the matched ``PathExact``/``PathPrefix`` replaced (``rewrite``);
- ``load_balancer``: the resolver's policy and ring sizes; ``hash_policies``: those of the
  node after the route (splitter or resolver), as Envoy reads them per route;
- header changes of the split leg, then of the route.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from consul_discovery.client.chain.hash_key import request_hash
from consul_discovery.client.chain.match import Predicate, RequestView, compile_match
from consul_discovery.client.chain.model import (
    DEFAULT_LOAD_BALANCER,
    Chain,
    ChainRetry,
    ChainTarget,
    HashPolicy,
    HeaderModifiers,
    LoadBalancer,
    ResolverNode,
    Route,
    RouterNode,
    Split,
    SplitterNode,
)

Random = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Decision:
    """Where and how to send one request (precomputed per route and split leg)."""

    targets: tuple[ChainTarget, ...]
    resolver: str
    route: int | None = None
    split: int | None = None
    match_prefix: str = ""
    prefix_rewrite: str | None = None
    request_timeout: float | None = None
    idle_timeout: float | None = None
    connect_timeout: float | None = None
    retry: ChainRetry | None = None
    load_balancer: LoadBalancer = DEFAULT_LOAD_BALANCER
    hash_policies: tuple[HashPolicy, ...] = ()
    request_headers: tuple[HeaderModifiers, ...] = ()
    response_headers: tuple[HeaderModifiers, ...] = ()

    @property
    def target(self) -> ChainTarget:
        """The primary target (failover targets follow it in ``targets``)."""
        return self.targets[0]

    def rewrite(self, path: str) -> str:
        """``path`` with the matched prefix replaced by ``prefix_rewrite`` (if any)."""
        if self.prefix_rewrite is None or not path.startswith(self.match_prefix):
            return path
        return self.prefix_rewrite + path[len(self.match_prefix) :]

    def hash_key(self, request: RequestView) -> int | None:
        """The request's hash for ``ring_hash``/``maglev`` (None: pick at random)."""
        return request_hash(self.hash_policies, request) if self.hash_policies else None


class _SplitChoice:
    """One split node's legs as a weighted draw over precomputed outcomes (Decisions,
    or what ``ChainRouter.map`` made of them)."""

    __slots__ = ("_cumulative", "_total", "decisions")

    def __init__(self, weights: list[float], decisions: list[Any]) -> None:
        cumulative = []
        total = 0.0
        for weight in weights:
            total += weight
            cumulative.append(total)
        # The last bound is infinite: a draw of random() * total lands in some leg even
        # when float rounding makes it equal to total, with no bounds check per call.
        cumulative[-1] = math.inf
        self._cumulative = cumulative
        self._total = total
        self.decisions = tuple(decisions)

    def choose(self, random: Random) -> Any:
        return self.decisions[bisect_right(self._cumulative, random() * self._total)]

    def map(self, function: Callable[[Decision], Any]) -> _SplitChoice:
        """The same draw over ``function`` of each leg's Decision."""
        mapped = object.__new__(_SplitChoice)
        mapped._cumulative = self._cumulative
        mapped._total = self._total
        mapped.decisions = tuple(function(d) for d in self.decisions)
        return mapped


Outcome = Decision | _SplitChoice


class ChainRouter:
    """Decides per request where it goes, from one compiled chain (immutable, no I/O).

    ``plain`` is true when the caller should call the service as if it had no chain
    (Consul's default chain, or one that cannot be honoured: ``problems`` says why).
    ``random`` (injected) draws split legs: a float in [0, 1).
    """

    __slots__ = ("_outcomes", "_random", "chain", "plain", "problems", "service", "targets")

    def __init__(
        self,
        service: str,
        *,
        chain: Chain | None = None,
        outcomes: tuple[tuple[Predicate | None, Outcome], ...] = (),
        random: Random,
        problems: tuple[str, ...] = (),
    ) -> None:
        self.service = service
        self.chain = chain
        self.problems = problems
        self.plain = chain is None or bool(problems) or chain.default
        if self.plain:
            outcomes = ((None, _plain_decision(service)),)
        self._outcomes = outcomes
        self._random = random
        # Every target this chain may send to (primaries and failovers): what to watch.
        targets: dict[str, ChainTarget] = {}
        for _, outcome in outcomes:
            for decision in _decisions_of(outcome):
                targets.update((t.id, t) for t in decision.targets)
        self.targets: tuple[ChainTarget, ...] = tuple(targets.values())

    def decide(self, request: RequestView) -> Decision:
        """The Decision for ``request``: the first route that matches, then a split leg.

        A ``plain`` router always answers the plain service (callers need not ask).
        Consul always ends a router with a catch-all route, so some route matches.
        """
        for predicate, outcome in self._outcomes:
            if predicate is None or predicate(request):
                if type(outcome) is Decision:
                    return outcome
                return outcome.choose(self._random)  # type: ignore[union-attr]
        raise LookupError(f"no route of {self.service}'s chain matches {request.path!r}")

    def decisions(self) -> tuple[Decision, ...]:
        """Every Decision this router can make, in route then split-leg order."""
        return tuple(d for _, outcome in self._outcomes for d in _decisions_of(outcome))

    def map(self, function: Callable[[Decision], T], random: Random | None = None) -> Decider[T]:
        """The same routing with ``function`` of each Decision as its outcome (computed
        once here, for every route and split leg); ``random`` draws split legs (default:
        this router's)."""
        outcomes = tuple(
            (predicate, function(o) if type(o) is Decision else o.map(function))  # type: ignore[union-attr, arg-type]
            for predicate, o in self._outcomes
        )
        return Decider(self.service, outcomes, random or self._random)

    def __repr__(self) -> str:
        state = "plain" if self.plain else f"{len(self._outcomes)} route(s)"
        return f"ChainRouter({self.service!r}, {state}, problems={list(self.problems)!r})"


class Decider(Generic[T]):
    """A chain's routing with precomputed values of the caller's as outcomes (e.g. the
    client core's Routes): ``decide`` matches and draws exactly as ``ChainRouter.decide``
    and returns the value made for that route and split leg. Immutable, no I/O."""

    __slots__ = ("_outcomes", "_random", "service")

    def __init__(
        self, service: str, outcomes: tuple[tuple[Predicate | None, Any], ...], random: Random
    ) -> None:
        self.service = service
        self._outcomes = outcomes
        self._random = random

    def decide(self, request: RequestView) -> T:
        """The value for ``request``: the first route that matches, then a split leg."""
        for predicate, outcome in self._outcomes:
            if predicate is None or predicate(request):
                if type(outcome) is _SplitChoice:
                    return outcome.choose(self._random)  # type: ignore[no-any-return]
                return outcome  # type: ignore[no-any-return]
        raise LookupError(f"no route of {self.service}'s chain matches {request.path!r}")

    def values(self) -> tuple[T, ...]:
        """Every value, in route then split-leg order."""
        out: list[T] = []
        for _, outcome in self._outcomes:
            if type(outcome) is _SplitChoice:
                out.extend(outcome.decisions)
            else:
                out.append(outcome)
        return tuple(out)


def _plain_decision(service: str) -> Decision:
    target = ChainTarget(id=service, service=service, datacenter="")
    return Decision(targets=(target,), resolver="")


def plain_router(service: str, *problems: str) -> ChainRouter:
    """A router that says: call ``service`` plainly (no chain, or one not honoured)."""
    return ChainRouter(service, random=lambda: 0.0, problems=tuple(problems))


def compile_chain(chain: Chain, *, random: Random) -> ChainRouter:
    """The ChainRouter of ``chain``; ``plain`` (with problems) if it cannot be honoured."""
    if chain.unsupported:
        return ChainRouter(chain.service, chain=chain, random=random, problems=chain.unsupported)
    try:
        outcomes = _outcomes(chain)
    except (re.error, ValueError) as exc:
        problem = f"cannot compile the chain of {chain.service!r}: {exc}"
        return ChainRouter(chain.service, chain=chain, random=random, problems=(problem,))
    return ChainRouter(chain.service, chain=chain, outcomes=outcomes, random=random)


def _outcomes(chain: Chain) -> tuple[tuple[Predicate | None, Outcome], ...]:
    start = chain.nodes[chain.start_node]
    if isinstance(start, RouterNode):
        out = []
        for i, route in enumerate(start.routes):
            predicate = compile_match(route.match)
            out.append((None if route.match.catch_all else predicate, _after(chain, route, i)))
            if route.match.catch_all:
                break  # nothing after a catch-all can match
        return tuple(out)
    return ((None, _after(chain, None, None)),)


def _after(chain: Chain, route: Route | None, index: int | None) -> Outcome:
    node = chain.nodes[route.next_node] if route else chain.nodes[chain.start_node]
    if isinstance(node, SplitterNode):
        legs = [
            _decision(chain, route, index, i, split, node.load_balancer)
            for i, split in enumerate(node.splits)
        ]
        weights = [split.weight for split in node.splits]
        if sum(weights) <= 0:
            raise ValueError(f"splitter {node.name!r} has no weight")
        return _SplitChoice(weights, legs)
    assert isinstance(node, ResolverNode)
    return _decision(chain, route, index, None, None, node.load_balancer)


def _decision(
    chain: Chain,
    route: Route | None,
    index: int | None,
    split_index: int | None,
    split: Split | None,
    hashing: LoadBalancer,
) -> Decision:
    if split is not None:
        resolver = chain.nodes[split.next_node]
    else:
        resolver = chain.nodes[route.next_node if route else chain.start_node]
    assert isinstance(resolver, ResolverNode)
    targets = tuple(chain.targets[t] for t in (resolver.target, *resolver.failover))
    dest = route.destination if route else None
    match = route.match if route else None
    prefix = ""
    if match is not None and dest is not None and dest.prefix_rewrite:
        prefix = match.path_exact or match.path_prefix
    layers = [x for x in (split, dest) if x is not None]
    request_headers = tuple(x.request_headers for x in layers if x.request_headers)
    response_headers = tuple(x.response_headers for x in layers if x.response_headers)
    return Decision(
        targets=targets,
        resolver=resolver.name,
        route=index,
        split=split_index,
        match_prefix=prefix,
        prefix_rewrite=dest.prefix_rewrite if dest and prefix else None,
        request_timeout=(dest.request_timeout if dest else None) or resolver.request_timeout,
        idle_timeout=dest.idle_timeout if dest else None,
        connect_timeout=targets[0].connect_timeout or resolver.connect_timeout,
        retry=dest.retry if dest else None,
        load_balancer=resolver.load_balancer,
        hash_policies=hashing.hash_policies,
        request_headers=request_headers,
        response_headers=response_headers,
    )


def _decisions_of(outcome: Outcome) -> tuple[Decision, ...]:
    return (outcome,) if isinstance(outcome, Decision) else outcome.decisions
