"""Read Consul 1.22's ``/v1/discovery-chain/<service>`` answer into frozen values (no I/O).

Every field the client honours is read; every field it may safely ignore (Envoy-only
plumbing such as SNI, mesh gateway and transparent proxy settings, virtual IPs) is
skipped; anything else that is set (an Enterprise feature such as a namespace, a peer,
a failover policy, or a field a later Consul adds) is named in ``Chain.unsupported``,
so the caller can report it once and call the plain service instead. A malformed
answer raises ``ChainFormatError`` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consul_discovery.client.chain.model import (
    Chain,
    ChainTarget,
    HashPolicy,
    LoadBalancer,
    Node,
    ResolverNode,
    RingHashConfig,
    RouterNode,
    SplitterNode,
)
from consul_discovery.client.chain.parse_routes import read_route, read_split
from consul_discovery.client.chain.reading import (
    LB_POLICIES,
    ChainFormatError,
    Reader,
    parse_duration,
)

# The fields of each object that are honoured (or, for plumbing, safely ignored).
_CHAIN_PLUMBING = (
    *("StartNode", "Nodes", "Targets", "CustomizationHash", "ServiceMeta"),
    *("AutoVirtualIPs", "ManualVirtualIPs"),
)

_TARGET_KEYS = (
    *("ID", "Service", "ServiceSubset", "Namespace", "Partition", "Datacenter"),
    *("Subset", "ConnectTimeout"),
)


def parse_chain(answer: Mapping[str, Any]) -> Chain:
    """A Chain from the JSON of ``/v1/discovery-chain/<service>`` (``{"Chain": {...}}``)."""
    r = Reader()
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


def _target(r: Reader, raw: Mapping[str, Any], key: str, chain_dc: str) -> ChainTarget:
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


def _node(r: Reader, raw: Mapping[str, Any], key: str) -> Node:
    where = f"Nodes[{key}]"
    kind = raw.get("Type")
    r.keys(raw, where, ("Type", "Name", "Routes", "Splits", "Resolver", "LoadBalancer"))
    lb = _load_balancer(r, r.obj(raw.get("LoadBalancer"), f"{where}.LoadBalancer"), where)
    if kind == "router":
        routes = r.seq(raw.get("Routes"), f"{where}.Routes")
        return RouterNode(
            key,
            tuple(
                read_route(r, r.obj(x, f"{where}.Routes[{i}]"), where, i)
                for i, x in enumerate(routes)
            ),
        )
    if kind == "splitter":
        splits = r.seq(raw.get("Splits"), f"{where}.Splits")
        if not splits:
            raise ChainFormatError(f"{where}: a splitter without Splits")
        return SplitterNode(
            key,
            tuple(
                read_split(r, r.obj(x, f"{where}.Splits[{i}]"), f"{where}.Splits[{i}]")
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


def _load_balancer(r: Reader, raw: Mapping[str, Any], node: str) -> LoadBalancer:
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
