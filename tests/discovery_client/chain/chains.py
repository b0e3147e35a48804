"""Discovery-chain answers shaped as Consul 1.22 writes them, for unit tests (no agent).

The shapes are copied from real answers of a 1.22.3 dev agent (the integration tests in
``test_chain_consul.py`` check the same code against the agent itself).
"""

from __future__ import annotations

from typing import Any


def target(service: str, subset: str = "", dc: str = "dc1", **extra: Any) -> dict[str, Any]:
    """One entry of ``Chain.Targets``."""
    ident = f"{subset + '.' if subset else ''}{service}.default.default.{dc}"
    return {
        "ConnectTimeout": "5s",
        "ID": ident,
        "Service": service,
        **({"ServiceSubset": subset} if subset else {}),
        "Namespace": "default",
        "Partition": "default",
        "Datacenter": dc,
        "MeshGateway": {},
        "Subset": {},
        "TransparentProxy": {},
        "SNI": f"{service}.default.{dc}.internal.x.consul",
        "Name": f"{service}.default.{dc}.internal.x.consul",
        **extra,
    }


def resolver(tgt: dict[str, Any], failover: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    """A resolver node for ``tgt``."""
    res: dict[str, Any] = {"ConnectTimeout": "5s", "Target": tgt["ID"]}
    if failover:
        res["Failover"] = {"Targets": list(failover)}
    node = {"Type": "resolver", "Name": tgt["ID"], "Resolver": res}
    node.update(extra)
    return node


def chain(
    service: str,
    start: str,
    nodes: dict[str, Any],
    targets: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """A whole answer: ``{"Chain": {...}}``."""
    body = {
        "ServiceName": service,
        "Namespace": "default",
        "Partition": "default",
        "Datacenter": "dc1",
        "Protocol": "http",
        "StartNode": start,
        "Nodes": nodes,
        "Targets": {t["ID"]: t for t in targets},
        "AutoVirtualIPs": ["240.0.0.1"],
        "ManualVirtualIPs": [],
    }
    body.update(extra)
    return {"Chain": body}


def default_chain(service: str = "web") -> dict[str, Any]:
    """What Consul answers for a service with no config entries."""
    t = target(service)
    node = resolver(t)
    node["Resolver"]["Default"] = True
    return chain(
        service,
        f"resolver:{t['ID']}",
        {node["Type"] + ":" + t["ID"]: node},
        [t],
        Default=True,
        Protocol="tcp",
    )


def canary_chain(weights: tuple[float, float] = (90, 10)) -> dict[str, Any]:
    """web: a router (header x-canary -> v2; /api prefix rewritten to /), then a 2-leg splitter."""
    v1, v2 = target("web", "v1", ConnectTimeout="3s"), target("web", "v2")
    v1["Subset"] = {"Filter": 'Service.Meta.version == "1"'}
    v2["Subset"] = {"Filter": 'Service.Meta.version == "2"', "OnlyPassing": True}
    r1, r2 = f"resolver:{v1['ID']}", f"resolver:{v2['ID']}"
    splitter = "splitter:web.default.default"
    routes = [
        {
            "Definition": {
                "Match": {
                    "HTTP": {"PathPrefix": "/", "Header": [{"Name": "x-canary", "Exact": "1"}]}
                },
                "Destination": {"ServiceSubset": "v2", "RequestTimeout": "2s"},
            },
            "NextNode": r2,
        },
        {
            "Definition": {
                "Match": {"HTTP": {"PathPrefix": "/api/"}},
                "Destination": {
                    "PrefixRewrite": "/",
                    "NumRetries": 2,
                    "RetryOnConnectFailure": True,
                    "RetryOnStatusCodes": [503],
                },
            },
            "NextNode": splitter,
        },
        {
            "Definition": {
                "Match": {"HTTP": {"PathPrefix": "/"}},
                "Destination": {"Service": "web", "Namespace": "default", "Partition": "default"},
            },
            "NextNode": splitter,
        },
    ]
    nodes = {
        "router:web.default.default": {
            "Type": "router",
            "Name": "web.default.default",
            "Routes": routes,
        },
        splitter: {
            "Type": "splitter",
            "Name": "web.default.default",
            "Splits": [
                {
                    "Definition": {"Weight": weights[0], "ServiceSubset": "v1"},
                    "Weight": weights[0],
                    "NextNode": r1,
                },
                {
                    "Definition": {
                        "Weight": weights[1],
                        "ServiceSubset": "v2",
                        "RequestHeaders": {"Set": {"x-leg": "v2"}},
                    },
                    "Weight": weights[1],
                    "NextNode": r2,
                },
            ],
        },
        # A resolver's RequestTimeout comes as integer nanoseconds, ConnectTimeout as text.
        r1: {
            "Type": "resolver",
            "Name": v1["ID"],
            "Resolver": {
                "ConnectTimeout": "3s",
                "Target": v1["ID"],
                "RequestTimeout": 7_000_000_000,
            },
        },
        r2: resolver(v2),
    }
    return chain("web", "router:web.default.default", nodes, [v1, v2])
