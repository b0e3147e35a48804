"""Write config entries to a real agent, fetch Consul's compiled chain, read its answer."""

from __future__ import annotations

import random
from collections.abc import Iterable
from http.server import ThreadingHTTPServer
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from consul_discovery.client.chain import ChainRouter, DiscoveryChainQuery, RequestView
from tests.harness.agent import ConsulAgent


def write_entry(agent: ConsulAgent, entry: dict[str, Any]) -> None:
    """PUT one config entry; fail with Consul's own words if it refuses it."""
    response = requests.put(f"{agent.url}/v1/config", json=entry, timeout=5)
    assert response.status_code == 200 and response.text.strip() == "true", (
        f"Consul refused {entry['Kind']} {entry['Name']}: {response.status_code} {response.text}"
    )


def delete_entry(agent: ConsulAgent, kind: str, name: str) -> None:
    """Delete one config entry."""
    requests.delete(f"{agent.url}/v1/config/{kind}/{name}", timeout=5).raise_for_status()


def fetch(agent: ConsulAgent, service: str, seed: int = 1) -> tuple[dict[str, Any], ChainRouter]:
    """Consul's compiled chain of ``service`` (its JSON) and our router built from it."""
    query = DiscoveryChainQuery(service, random=random.Random(seed).random)
    response = requests.get(f"{agent.url}{query.path}", timeout=5)
    assert response.status_code == 200, response.text
    answer = query.read(int(response.headers["X-Consul-Index"]), response.content)
    return response.json()["Chain"], answer.router


def compiled_routes(chain: dict[str, Any]) -> list[dict[str, Any]]:
    """The routes of the chain's start node (a router), as Consul compiled them."""
    start = chain["Nodes"][chain["StartNode"]]
    assert start["Type"] == "router", f"the chain starts with a {start['Type']}"
    return start["Routes"]


def route_index(chain: dict[str, Any], http_match: dict[str, Any]) -> int:
    """Which compiled route carries ``http_match`` (the Match.HTTP we wrote)."""
    for i, route in enumerate(compiled_routes(chain)):
        if (route["Definition"].get("Match") or {}).get("HTTP") == http_match:
            return i
    raise AssertionError(f"Consul compiled no route for {http_match}")


def resolvers_after(chain: dict[str, Any], node_name: str) -> list[str]:
    """The resolver node(s) a route's NextNode leads to (one, or one per split leg)."""
    node = chain["Nodes"][node_name]
    if node["Type"] == "resolver":
        return [node_name]
    return [split["NextNode"] for split in node["Splits"]]


def target_of(chain: dict[str, Any], resolver_node: str) -> dict[str, Any]:
    """The target a resolver node resolves to, as Consul compiled it."""
    return chain["Targets"][chain["Nodes"][resolver_node]["Resolver"]["Target"]]


def register(
    agent: ConsulAgent,
    service: str,
    ident: str,
    port: int,
    meta: dict[str, str] | None = None,
    status: str = "passing",
    tags: tuple[str, ...] = (),
) -> None:
    """Register an instance with a TTL check already in ``status``."""
    body = {
        "Name": service,
        "ID": ident,
        "Address": "127.0.0.1",
        "Port": port,
        "Meta": meta or {},
        "Tags": list(tags),
        "Check": {"CheckID": f"{ident}-ttl", "TTL": "300s", "Status": status},
    }
    response = requests.put(f"{agent.url}/v1/agent/service/register", json=body, timeout=5)
    response.raise_for_status()


def stop_instances(
    agent: ConsulAgent, servers: Iterable[ThreadingHTTPServer], idents: Iterable[str]
) -> None:
    """Stop the instances' servers and deregister their ids (a module's teardown)."""
    for server in servers:
        server.shutdown()
        server.server_close()
    for ident in idents:
        requests.put(f"{agent.url}/v1/agent/service/deregister/{ident}", timeout=5)


def health(agent: ConsulAgent, service: str, **params: str) -> list[str]:
    """Ids of ``service``'s instances the health endpoint returns with ``params``."""
    response = requests.get(f"{agent.url}/v1/health/service/{service}", params=params, timeout=5)
    response.raise_for_status()
    return sorted(entry["Service"]["ID"] for entry in response.json())


def http(service: str) -> dict[str, Any]:
    """A service-defaults entry making ``service`` speak HTTP (routers and splitters need it)."""
    return {"Kind": "service-defaults", "Name": service, "Protocol": "http"}


def view(target: str = "/", method: str = "GET", headers: dict | None = None) -> RequestView:
    """A request of ``method`` on ``target`` with ``headers`` (case-insensitive)."""
    return RequestView.of(method, target, CaseInsensitiveDict(headers or {}))
