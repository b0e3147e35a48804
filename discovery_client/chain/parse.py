"""Read Consul 1.22's ``/v1/discovery-chain/<service>`` answer into frozen values (no I/O).

Every field the client honours is read; every field it may safely ignore (Envoy-only
plumbing such as SNI, mesh gateway and transparent proxy settings, virtual IPs) is
skipped; anything else that is set (an Enterprise feature such as a namespace, a peer,
a failover policy, or a field a later Consul adds) is named in ``Chain.unsupported``,
so the caller can report it once and call the plain service instead. A malformed
answer raises ``ChainFormatError`` naming what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from consul_discovery.client.chain.model import (
    NO_HEADER_CHANGES,
    Chain,
    ChainRetry,
    ChainTarget,
    HashPolicy,
    HeaderMatch,
    HeaderModifiers,
    HttpMatch,
    LoadBalancer,
    Node,
    QueryMatch,
    ResolverNode,
    RingHashConfig,
    Route,
    RouteDestination,
    RouterNode,
    Split,
    SplitterNode,
)


class ChainFormatError(ValueError):
    """Consul's discovery-chain answer is not shaped as expected; the message says where."""


#: Load-balancer policies Consul accepts, all of which have a picker here.
LB_POLICIES = frozenset({"", "least_request", "round_robin", "random", "ring_hash", "maglev"})

#: Envoy retry-on conditions that apply to an HTTP/1.1 client.
RETRY_CONDITIONS = frozenset(
    {"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "retriable-status-codes"}
)
#: Conditions that can never occur without Envoy or HTTP/2 and gRPC between us and the
#: instance (Envoy's rate-limit header, REFUSED_STREAM, grpc-status): accepted, no effect.
INERT_RETRY_CONDITIONS = frozenset(
    {
        "envoy-ratelimited",
        "refused-stream",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: Any, where: str) -> float | None:
    """Seconds from a Go duration: a string ("250ms", "1m30s") or integer nanoseconds.

    Consul writes both forms in one answer (a resolver's ``RequestTimeout`` is integer
    nanoseconds, its ``ConnectTimeout`` a string). None, "" and 0 mean unset.
    """
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise ChainFormatError(f"{where}: a duration, not {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ChainFormatError(f"{where}: negative duration {value!r}")
        return float(value) / 1e9
    if not isinstance(value, str):
        raise ChainFormatError(f"{where}: a duration, not {value!r}")
    text = value.strip()
    if text == "0":
        return None
    pos, total = 0, 0.0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            raise ChainFormatError(f"{where}: not a Go duration: {value!r}")
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if not text:
        raise ChainFormatError(f"{where}: empty duration")
    return total or None


# The fields of each object that are honoured (or, for plumbing, safely ignored).
_CHAIN_PLUMBING = (
    *("StartNode", "Nodes", "Targets", "CustomizationHash", "ServiceMeta"),
    *("AutoVirtualIPs", "ManualVirtualIPs"),
)
_TARGET_KEYS = (
    *("ID", "Service", "ServiceSubset", "Namespace", "Partition", "Datacenter"),
    *("Subset", "ConnectTimeout"),
)
_HTTP_MATCH_KEYS = (
    *("PathExact", "PathPrefix", "PathRegex", "CaseInsensitive"),
    *("Header", "QueryParam", "Methods"),
)
_HEADER_MATCH_KEYS = ("Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert")
_DESTINATION_KEYS = (
    *("Service", "ServiceSubset", "Namespace", "Partition", "PrefixRewrite"),
    *("RequestTimeout", "IdleTimeout", "NumRetries", "RetryOnConnectFailure", "RetryOn"),
    *("RetryOnStatusCodes", "RequestHeaders", "ResponseHeaders"),
)
_SPLIT_KEYS = (
    *("Weight", "Service", "ServiceSubset", "Namespace", "Partition"),
    *("RequestHeaders", "ResponseHeaders"),
)


def _is_set(value: Any) -> bool:
    # Go's omitempty: false, 0, "", empty lists and maps carry no meaning.
    return value not in (None, False, 0, "", [], {})


class _Reader:
    """Walks one answer, collecting unsupported features in words."""

    def __init__(self) -> None:
        self.unsupported: list[str] = []  # owned by this one parse

    def obj(self, value: Any, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ChainFormatError(f"{where}: an object, not {type(value).__name__}")
        return value

    def seq(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ChainFormatError(f"{where}: a list, not {type(value).__name__}")
        return value

    def text(self, value: Any, where: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ChainFormatError(f"{where}: a string, not {value!r}")
        return value

    def keys(
        self,
        data: Mapping[str, Any],
        where: str,
        known: Iterable[str],
        ignored: Iterable[str] = (),
    ) -> None:
        """Name every set key that is neither honoured nor safely ignorable."""
        allowed = set(known) | set(ignored)
        for key, value in data.items():
            if key not in allowed and _is_set(value):
                self.unsupported.append(f"{where}.{key} ({value!r})")

    def unsupported_if_set(self, data: Mapping[str, Any], where: str, *keys: str) -> None:
        for key in keys:
            if _is_set(data.get(key)):
                self.unsupported.append(f"{where}.{key} ({data[key]!r})")

    def default_tenancy(self, data: Mapping[str, Any], where: str) -> None:
        """Namespaces and admin partitions other than "default" are Consul Enterprise."""
        for key in ("Namespace", "Partition"):
            value = data.get(key)
            if value not in (None, "", "default"):
                self.unsupported.append(f"{where}.{key} {value!r} (Consul Enterprise)")


def parse_chain(answer: Mapping[str, Any]) -> Chain:
    """A Chain from the JSON of ``/v1/discovery-chain/<service>`` (``{"Chain": {...}}``)."""
    r = _Reader()
    body = r.obj(answer, "answer")
    raw = r.obj(body.get("Chain"), "Chain")
    if not raw:
        raise ChainFormatError("answer: no Chain")
    r.keys(
        raw,
        "Chain",
        ("ServiceName", "Namespace", "Partition", "Datacenter", "Default", "Protocol"),
        _CHAIN_PLUMBING,
    )
    r.default_tenancy(raw, "Chain")
    service = r.text(raw.get("ServiceName"), "Chain.ServiceName")
    datacenter = r.text(raw.get("Datacenter"), "Chain.Datacenter")
    start = r.text(raw.get("StartNode"), "Chain.StartNode")
    if not service or not start:
        raise ChainFormatError("Chain: ServiceName and StartNode are required")
    targets = {
        key: _target(r, r.obj(value, f"Targets[{key}]"), key, datacenter)
        for key, value in r.obj(raw.get("Targets"), "Chain.Targets").items()
    }
    nodes = {
        key: _node(r, r.obj(value, f"Nodes[{key}]"), key)
        for key, value in r.obj(raw.get("Nodes"), "Chain.Nodes").items()
    }
    chain = Chain(
        service=service,
        datacenter=datacenter,
        start_node=start,
        nodes=nodes,
        targets=targets,
        protocol=r.text(raw.get("Protocol"), "Chain.Protocol") or "tcp",
        namespace=r.text(raw.get("Namespace"), "Chain.Namespace") or "default",
        partition=r.text(raw.get("Partition"), "Chain.Partition") or "default",
        default=bool(raw.get("Default")),
        unsupported=tuple(dict.fromkeys(r.unsupported)),
    )
    check_links(chain)
    return chain


def check_links(chain: Chain) -> None:
    """Every node the chain names exists and has the right type; every target exists."""
    nodes, targets = chain.nodes, chain.targets

    def need(name: str, where: str, kinds: tuple[type, ...]) -> None:
        node = nodes.get(name)
        if node is None:
            raise ChainFormatError(f"{where}: no node {name!r} in Chain.Nodes")
        if not isinstance(node, kinds):
            raise ChainFormatError(f"{where}: node {name!r} is a {type(node).__name__}")

    need(chain.start_node, "Chain.StartNode", (RouterNode, SplitterNode, ResolverNode))
    for name, node in nodes.items():
        if isinstance(node, RouterNode):
            for i, route in enumerate(node.routes):
                need(route.next_node, f"{name}.Routes[{i}]", (SplitterNode, ResolverNode))
        elif isinstance(node, SplitterNode):
            for i, split in enumerate(node.splits):
                need(split.next_node, f"{name}.Splits[{i}]", (ResolverNode,))
        else:
            for target in (node.target, *node.failover):
                if target not in targets:
                    raise ChainFormatError(f"{name}: no target {target!r} in Chain.Targets")


def _target(r: _Reader, raw: Mapping[str, Any], key: str, chain_dc: str) -> ChainTarget:
    where = f"Targets[{key}]"
    r.keys(
        raw,
        where,
        _TARGET_KEYS,
        ("MeshGateway", "TransparentProxy", "SNI", "Name"),
    )
    r.default_tenancy(raw, where)
    subset = r.obj(raw.get("Subset"), f"{where}.Subset")
    r.keys(subset, f"{where}.Subset", ("Filter", "OnlyPassing"))
    service = r.text(raw.get("Service"), f"{where}.Service")
    datacenter = r.text(raw.get("Datacenter"), f"{where}.Datacenter") or chain_dc
    if not service:
        raise ChainFormatError(f"{where}: no Service")
    return ChainTarget(
        id=r.text(raw.get("ID"), f"{where}.ID") or key,
        service=service,
        datacenter=datacenter,
        subset=r.text(raw.get("ServiceSubset"), f"{where}.ServiceSubset"),
        namespace=r.text(raw.get("Namespace"), f"{where}.Namespace") or "default",
        partition=r.text(raw.get("Partition"), f"{where}.Partition") or "default",
        filter=r.text(subset.get("Filter"), f"{where}.Subset.Filter") or None,
        only_passing=bool(subset.get("OnlyPassing")),
        connect_timeout=parse_duration(raw.get("ConnectTimeout"), f"{where}.ConnectTimeout"),
        local=datacenter == chain_dc,
    )


def _node(r: _Reader, raw: Mapping[str, Any], key: str) -> Node:
    where = f"Nodes[{key}]"
    kind = raw.get("Type")
    r.keys(raw, where, ("Type", "Name", "Routes", "Splits", "Resolver", "LoadBalancer"))
    lb = _load_balancer(r, r.obj(raw.get("LoadBalancer"), f"{where}.LoadBalancer"), where)
    if kind == "router":
        routes = r.seq(raw.get("Routes"), f"{where}.Routes")
        return RouterNode(
            key,
            tuple(
                _route(r, r.obj(x, f"{where}.Routes[{i}]"), where, i) for i, x in enumerate(routes)
            ),
        )
    if kind == "splitter":
        splits = r.seq(raw.get("Splits"), f"{where}.Splits")
        if not splits:
            raise ChainFormatError(f"{where}: a splitter without Splits")
        return SplitterNode(
            key,
            tuple(
                _split(r, r.obj(x, f"{where}.Splits[{i}]"), f"{where}.Splits[{i}]")
                for i, x in enumerate(splits)
            ),
            lb,
        )
    if kind == "resolver":
        res = r.obj(raw.get("Resolver"), f"{where}.Resolver")
        r.keys(
            res,
            f"{where}.Resolver",
            ("Default", "ConnectTimeout", "RequestTimeout", "Target", "Failover"),
        )
        failover = r.obj(res.get("Failover"), f"{where}.Resolver.Failover")
        r.keys(failover, f"{where}.Resolver.Failover", ("Targets",))
        target = r.text(res.get("Target"), f"{where}.Resolver.Target")
        if not target:
            raise ChainFormatError(f"{where}: a resolver without Target")
        return ResolverNode(
            name=key,
            target=target,
            failover=tuple(
                r.text(t, f"{where}.Resolver.Failover.Targets")
                for t in r.seq(failover.get("Targets"), f"{where}.Resolver.Failover.Targets")
            ),
            connect_timeout=parse_duration(res.get("ConnectTimeout"), f"{where}.ConnectTimeout"),
            request_timeout=parse_duration(res.get("RequestTimeout"), f"{where}.RequestTimeout"),
            load_balancer=lb,
            default=bool(res.get("Default")),
        )
    raise ChainFormatError(f"{where}: unknown node Type {kind!r}")


def _route(r: _Reader, raw: Mapping[str, Any], node: str, i: int) -> Route:
    where = f"{node}.Routes[{i}]"
    r.keys(raw, where, ("Definition", "NextNode"))
    definition = r.obj(raw.get("Definition"), f"{where}.Definition")
    r.keys(definition, f"{where}.Definition", ("Match", "Destination"))
    match = r.obj(definition.get("Match"), f"{where}.Match")
    r.keys(match, f"{where}.Match", ("HTTP",))
    next_node = r.text(raw.get("NextNode"), f"{where}.NextNode")
    if not next_node:
        raise ChainFormatError(f"{where}: no NextNode")
    return Route(
        match=_http_match(
            r, r.obj(match.get("HTTP"), f"{where}.Match.HTTP"), f"{where}.Match.HTTP"
        ),
        destination=_destination(
            r, r.obj(definition.get("Destination"), f"{where}.Destination"), f"{where}.Destination"
        ),
        next_node=next_node,
    )


def _http_match(r: _Reader, raw: Mapping[str, Any], where: str) -> HttpMatch:
    r.keys(
        raw,
        where,
        _HTTP_MATCH_KEYS,
    )
    headers = []
    for i, h in enumerate(r.seq(raw.get("Header"), f"{where}.Header")):
        h = r.obj(h, f"{where}.Header[{i}]")
        r.keys(
            h,
            f"{where}.Header[{i}]",
            ("Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert"),
        )
        headers.append(
            HeaderMatch(
                name=r.text(h.get("Name"), f"{where}.Header[{i}].Name"),
                present=bool(h.get("Present")),
                exact=r.text(h.get("Exact"), f"{where}.Header[{i}].Exact"),
                prefix=r.text(h.get("Prefix"), f"{where}.Header[{i}].Prefix"),
                suffix=r.text(h.get("Suffix"), f"{where}.Header[{i}].Suffix"),
                regex=r.text(h.get("Regex"), f"{where}.Header[{i}].Regex"),
                invert=bool(h.get("Invert")),
            )
        )
    query = []
    for i, q in enumerate(r.seq(raw.get("QueryParam"), f"{where}.QueryParam")):
        q = r.obj(q, f"{where}.QueryParam[{i}]")
        r.keys(q, f"{where}.QueryParam[{i}]", ("Name", "Present", "Exact", "Regex"))
        query.append(
            QueryMatch(
                name=r.text(q.get("Name"), f"{where}.QueryParam[{i}].Name"),
                present=bool(q.get("Present")),
                exact=r.text(q.get("Exact"), f"{where}.QueryParam[{i}].Exact"),
                regex=r.text(q.get("Regex"), f"{where}.QueryParam[{i}].Regex"),
            )
        )
    return HttpMatch(
        path_exact=r.text(raw.get("PathExact"), f"{where}.PathExact"),
        path_prefix=r.text(raw.get("PathPrefix"), f"{where}.PathPrefix"),
        path_regex=r.text(raw.get("PathRegex"), f"{where}.PathRegex"),
        case_insensitive=bool(raw.get("CaseInsensitive")),
        headers=tuple(headers),
        query=tuple(query),
        methods=tuple(
            r.text(m, f"{where}.Methods").upper()
            for m in r.seq(raw.get("Methods"), f"{where}.Methods")
        ),
    )


def _destination(r: _Reader, raw: Mapping[str, Any], where: str) -> RouteDestination:
    r.keys(
        raw,
        where,
        _DESTINATION_KEYS,
    )
    r.default_tenancy(raw, where)
    return RouteDestination(
        service=r.text(raw.get("Service"), f"{where}.Service"),
        subset=r.text(raw.get("ServiceSubset"), f"{where}.ServiceSubset"),
        prefix_rewrite=r.text(raw.get("PrefixRewrite"), f"{where}.PrefixRewrite"),
        request_timeout=parse_duration(raw.get("RequestTimeout"), f"{where}.RequestTimeout"),
        idle_timeout=parse_duration(raw.get("IdleTimeout"), f"{where}.IdleTimeout"),
        retry=_retry(r, raw, where),
        request_headers=_headers(r, raw.get("RequestHeaders"), f"{where}.RequestHeaders"),
        response_headers=_headers(r, raw.get("ResponseHeaders"), f"{where}.ResponseHeaders"),
    )


def _retry(r: _Reader, raw: Mapping[str, Any], where: str) -> ChainRetry | None:
    num = raw.get("NumRetries") or 0
    on = [r.text(x, f"{where}.RetryOn") for x in r.seq(raw.get("RetryOn"), f"{where}.RetryOn")]
    codes = r.seq(raw.get("RetryOnStatusCodes"), f"{where}.RetryOnStatusCodes")
    connect = bool(raw.get("RetryOnConnectFailure"))
    if not (num or on or codes or connect):
        return None  # Consul's HasRetryFeatures: no retry policy on this route
    if not isinstance(num, int) or num < 0:
        raise ChainFormatError(f"{where}.NumRetries: a count, not {num!r}")
    if any(not isinstance(c, int) or isinstance(c, bool) for c in codes):
        raise ChainFormatError(f"{where}.RetryOnStatusCodes: status codes, not {codes!r}")
    for condition in on:
        if condition not in RETRY_CONDITIONS | INERT_RETRY_CONDITIONS:
            r.unsupported.append(f"{where}.RetryOn {condition!r}")
    conditions = {c for c in on if c in RETRY_CONDITIONS}
    if connect:
        conditions.add("connect-failure")
    if codes:
        conditions.add("retriable-status-codes")
    return ChainRetry(
        num_retries=num or 1,  # Envoy's default when a retry policy sets none
        conditions=frozenset(conditions),
        status_codes=frozenset(codes),
    )


def _headers(r: _Reader, value: Any, where: str) -> HeaderModifiers:
    raw = r.obj(value, where)
    if not raw:
        return NO_HEADER_CHANGES
    r.keys(raw, where, ("Add", "Set", "Remove"))
    add = {str(k): r.text(v, f"{where}.Add") for k, v in r.obj(raw.get("Add"), where).items()}
    set_ = {str(k): r.text(v, f"{where}.Set") for k, v in r.obj(raw.get("Set"), where).items()}
    remove = tuple(r.text(x, f"{where}.Remove") for x in r.seq(raw.get("Remove"), where))
    return HeaderModifiers(add, set_, remove) if (add or set_ or remove) else NO_HEADER_CHANGES


def _split(r: _Reader, raw: Mapping[str, Any], where: str) -> Split:
    r.keys(raw, where, ("Definition", "Weight", "NextNode"))
    definition = r.obj(raw.get("Definition"), f"{where}.Definition")
    r.keys(
        definition,
        f"{where}.Definition",
        _SPLIT_KEYS,
    )
    r.default_tenancy(definition, f"{where}.Definition")
    weight = raw.get("Weight") or 0
    if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
        raise ChainFormatError(f"{where}.Weight: a percentage, not {weight!r}")
    next_node = r.text(raw.get("NextNode"), f"{where}.NextNode")
    if not next_node:
        raise ChainFormatError(f"{where}: no NextNode")
    return Split(
        weight=float(weight),
        next_node=next_node,
        service=r.text(definition.get("Service"), f"{where}.Service"),
        subset=r.text(definition.get("ServiceSubset"), f"{where}.ServiceSubset"),
        request_headers=_headers(r, definition.get("RequestHeaders"), f"{where}.RequestHeaders"),
        response_headers=_headers(r, definition.get("ResponseHeaders"), f"{where}.ResponseHeaders"),
    )


def _load_balancer(r: _Reader, raw: Mapping[str, Any], node: str) -> LoadBalancer:
    if not raw:
        return LoadBalancer()
    where = f"{node}.LoadBalancer"
    r.keys(raw, where, ("Policy", "RingHashConfig", "LeastRequestConfig", "HashPolicies"))
    policy = r.text(raw.get("Policy"), f"{where}.Policy")
    if policy not in LB_POLICIES:
        r.unsupported.append(f"{where}.Policy {policy!r}")
        policy = ""
    least = r.obj(raw.get("LeastRequestConfig"), f"{where}.LeastRequestConfig")
    r.keys(least, f"{where}.LeastRequestConfig", ("ChoiceCount",))
    if least.get("ChoiceCount") not in (None, 0, 2):
        # Our least_request compares two candidates (P2C); more is another algorithm.
        r.unsupported.append(f"{where}.LeastRequestConfig.ChoiceCount {least['ChoiceCount']!r}")
    ring = r.obj(raw.get("RingHashConfig"), f"{where}.RingHashConfig")
    r.keys(ring, f"{where}.RingHashConfig", ("MinimumRingSize", "MaximumRingSize"))
    defaults = RingHashConfig()
    try:
        ring_hash = RingHashConfig(
            int(ring.get("MinimumRingSize") or defaults.minimum_ring_size),
            int(ring.get("MaximumRingSize") or defaults.maximum_ring_size),
        )
    except (TypeError, ValueError) as exc:
        raise ChainFormatError(f"{where}.RingHashConfig: {exc}") from exc
    policies = []
    for i, p in enumerate(r.seq(raw.get("HashPolicies"), f"{where}.HashPolicies")):
        p = r.obj(p, f"{where}.HashPolicies[{i}]")
        at = f"{where}.HashPolicies[{i}]"
        r.keys(p, at, ("Field", "FieldValue", "SourceIP", "Terminal", "CookieConfig"))
        cookie = r.obj(p.get("CookieConfig"), f"{at}.CookieConfig")
        # Envoy makes up a cookie when the request has none (Session or TTL) and sets it on
        # the response; a client cannot, so that is not honoured. Path alone is harmless.
        r.keys(cookie, f"{at}.CookieConfig", ("Path",), ())
        field_name = r.text(p.get("Field"), f"{at}.Field") or None
        if field_name not in (None, "header", "cookie", "query_parameter"):
            r.unsupported.append(f"{at}.Field {field_name!r}")
        policies.append(
            HashPolicy(
                field=field_name,
                name=r.text(p.get("FieldValue"), f"{at}.FieldValue"),
                source_ip=bool(p.get("SourceIP")),
                terminal=bool(p.get("Terminal")),
            )
        )
    return LoadBalancer(policy, ring_hash, tuple(policies))
