"""Consul's compiled discovery chain as frozen values (what ``/v1/discovery-chain`` says).

Consul compiles a service's ``service-router``, ``service-splitter`` and
``service-resolver`` config entries (and ``service-defaults``' protocol) into one graph:
a start node, then router -> splitter -> resolver nodes, each resolver naming a target (a
service, a subset of it by filter, a datacenter) and its failover targets in order. These
values mirror that graph one to one (``consul_discovery.client.chain.parse`` builds them);
the routing decision for a request is ``consul_discovery.client.chain.decide``.

Durations are seconds (float); ``None`` means "not set" (the caller's own default).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from types import MappingProxyType


def _frozen(values: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True, slots=True)
class HeaderModifiers:
    """Headers a route or a split adds, sets or removes (Consul's ``RequestHeaders``).

    ``add`` appends a value to any already there, ``set`` replaces it, ``remove`` drops
    the header. Applied in that order, like Envoy's header mutations.
    """

    add: Mapping[str, str] = field(default_factory=dict)
    set: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "add", _frozen(self.add))
        object.__setattr__(self, "set", _frozen(self.set))
        object.__setattr__(self, "remove", tuple(self.remove))

    def __bool__(self) -> bool:
        return bool(self.add or self.set or self.remove)

    def apply(self, headers: MutableMapping[str, str]) -> None:
        """Change ``headers`` in place (a case-insensitive mapping: requests' or httpx')."""
        for name, value in self.add.items():
            current = headers.get(name)
            headers[name] = value if current is None else f"{current},{value}"
        for name, value in self.set.items():
            headers[name] = value
        for name in self.remove:
            headers.pop(name, None)


NO_HEADER_CHANGES = HeaderModifiers()


@dataclass(frozen=True, slots=True)
class ChainTarget:
    """One set of instances a chain may send to: a service, maybe a subset, a datacenter.

    ``filter`` is the subset's Consul filter expression for the health query (None: every
    instance); ``only_passing`` leaves out instances in ``warning`` too. ``local`` is
    true when ``datacenter`` is the one the chain was compiled in (the agent's own).
    """

    id: str
    service: str
    datacenter: str
    subset: str = ""
    namespace: str = "default"
    partition: str = "default"
    filter: str | None = None
    only_passing: bool = False
    connect_timeout: float | None = None
    local: bool = True

    @property
    def remote_datacenter(self) -> str | None:
        """The datacenter to name in a health query (None: the agent's own)."""
        return None if self.local else self.datacenter


@dataclass(frozen=True, slots=True)
class RingHashConfig:
    """Ring size bounds of the ``ring_hash`` policy (Consul's defaults: 1024 and 8192)."""

    minimum_ring_size: int = 1024
    maximum_ring_size: int = 8192

    def __post_init__(self) -> None:
        if not 1 <= self.minimum_ring_size <= self.maximum_ring_size:
            raise ValueError(
                "RingHashConfig needs 1 <= MinimumRingSize <= MaximumRingSize; got "
                f"{self.minimum_ring_size} and {self.maximum_ring_size}"
            )


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """What part of a request to hash for ``ring_hash``/``maglev`` (one of Consul's
    ``HashPolicies``): a header, cookie or query parameter named ``name``, or the source IP.

    ``terminal``: when this policy yields a value, the ones after it are not evaluated.
    """

    field: str | None = None  # "header", "cookie", "query_parameter"; None with source_ip
    name: str = ""
    source_ip: bool = False
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """A resolver's load-balancing settings: the policy, ring sizes and hash policies.

    ``policy`` is Consul's name ("" when unset: the client's own policy).
    """

    policy: str = ""
    ring_hash: RingHashConfig = RingHashConfig()
    hash_policies: tuple[HashPolicy, ...] = ()


DEFAULT_LOAD_BALANCER = LoadBalancer()


_ON_RESET = frozenset({"reset", "5xx", "gateway-error"})
_ON_CONNECT_FAILURE = _ON_RESET | {"connect-failure"}


@dataclass(frozen=True, slots=True)
class ChainRetry:
    """A route's retry settings (``NumRetries``, ``RetryOnConnectFailure``, ``RetryOn``,
    ``RetryOnStatusCodes``), read as Envoy reads them.

    ``conditions`` are Envoy's retry-on names ("5xx", "gateway-error", "reset",
    "connect-failure", "retriable-4xx", "retriable-status-codes", ...). With no condition,
    nothing is retried, whatever ``num_retries`` says (Envoy's empty ``retry_on``).
    """

    num_retries: int = 1
    conditions: frozenset[str] = frozenset()
    status_codes: frozenset[int] = frozenset()

    @property
    def max_attempts(self) -> int:
        """Attempts in all (the first plus the retries); 1 when nothing is retried."""
        return 1 + self.num_retries if self.conditions else 1

    @property
    def on_connect_failure(self) -> bool:
        """Retry an attempt whose connection could not be made (Envoy counts it as a reset,
        and a reset as a 5xx or gateway error)."""
        return bool(self.conditions & _ON_CONNECT_FAILURE)

    @property
    def on_reset(self) -> bool:
        """Retry an attempt that got no answer (reset, disconnect, read timeout)."""
        return bool(self.conditions & _ON_RESET)

    def retries_status(self, status: int) -> bool:
        """True if an answer with ``status`` is to be retried."""
        c = self.conditions
        if "5xx" in c and 500 <= status <= 599:
            return True
        if "gateway-error" in c and status in (502, 503, 504):
            return True
        if "retriable-4xx" in c and status == 409:
            return True
        return "retriable-status-codes" in c and status in self.status_codes


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One header condition of a route: present, exact, prefix, suffix or regex; inverted."""

    name: str
    present: bool = False
    exact: str = ""
    prefix: str = ""
    suffix: str = ""
    regex: str = ""
    invert: bool = False


@dataclass(frozen=True, slots=True)
class QueryMatch:
    """One query-parameter condition of a route: present, exact or regex."""

    name: str
    present: bool = False
    exact: str = ""
    regex: str = ""


@dataclass(frozen=True, slots=True)
class HttpMatch:
    """A route's HTTP match: at most one path rule, and every header, query and method one."""

    path_exact: str = ""
    path_prefix: str = ""
    path_regex: str = ""
    case_insensitive: bool = False
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()
    methods: tuple[str, ...] = ()

    @property
    def catch_all(self) -> bool:
        """True when the match takes every request (no rule, or just the prefix "/")."""
        return (
            not self.path_exact
            and self.path_prefix in ("", "/")
            and not self.path_regex
            and not self.headers
            and not self.query
            and not self.methods
        )


@dataclass(frozen=True, slots=True)
class RouteDestination:
    """Where a route sends, and how: rewrite, timeouts, retries, header changes."""

    service: str = ""
    subset: str = ""
    prefix_rewrite: str = ""
    request_timeout: float | None = None
    idle_timeout: float | None = None
    retry: ChainRetry | None = None
    request_headers: HeaderModifiers = NO_HEADER_CHANGES
    response_headers: HeaderModifiers = NO_HEADER_CHANGES


@dataclass(frozen=True, slots=True)
class Route:
    """One route of a router node: a match and a destination, leading to ``next_node``."""

    match: HttpMatch
    destination: RouteDestination
    next_node: str


@dataclass(frozen=True, slots=True)
class Split:
    """One leg of a splitter node: its compiled weight (percent) and its resolver node."""

    weight: float
    next_node: str
    service: str = ""
    subset: str = ""
    request_headers: HeaderModifiers = NO_HEADER_CHANGES
    response_headers: HeaderModifiers = NO_HEADER_CHANGES


@dataclass(frozen=True, slots=True)
class RouterNode:
    """A router node: routes tried in order, the first match wins."""

    name: str
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class SplitterNode:
    """A splitter node: legs chosen at random in proportion to their weights."""

    name: str
    splits: tuple[Split, ...]
    load_balancer: LoadBalancer = DEFAULT_LOAD_BALANCER


@dataclass(frozen=True, slots=True)
class ResolverNode:
    """A resolver node: its target, failover targets in order, timeouts, load balancer.

    ``default`` is true when no service-resolver entry shaped it.
    """

    name: str
    target: str
    failover: tuple[str, ...] = ()
    connect_timeout: float | None = None
    request_timeout: float | None = None
    load_balancer: LoadBalancer = DEFAULT_LOAD_BALANCER
    default: bool = False


Node = RouterNode | SplitterNode | ResolverNode


@dataclass(frozen=True, slots=True)
class Chain:
    """One service's compiled discovery chain.

    ``default`` is Consul's own flag: no service-router, -splitter or -resolver entry
    shaped it, so the service is called exactly as without a chain. ``unsupported``
    lists, in words, each feature of this chain that the client does not honour; a
    chain with any is not used (the client calls the plain service instead).
    """

    service: str
    datacenter: str
    start_node: str
    nodes: Mapping[str, Node]
    targets: Mapping[str, ChainTarget]
    protocol: str = "tcp"
    namespace: str = "default"
    partition: str = "default"
    default: bool = False
    unsupported: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))
        object.__setattr__(self, "targets", MappingProxyType(dict(self.targets)))
        object.__setattr__(self, "unsupported", tuple(self.unsupported))
