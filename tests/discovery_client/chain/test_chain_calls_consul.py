"""Calls routed by Consul's compiled chain, end to end, through all three transports.

A real agent holds the config entries (service-defaults, a resolver with subsets v1/v2
and a failover from v1 to v2, a 90/10 splitter, a router with a header route and a
prefix rewrite); three in-process HTTP instances (two v1, one v2) answer with who they
are, the path and the header they saw. The same checks run through ServiceClient
(requests), the httpx transport and the asyncio httpx transport: the splitter's share,
the header route (and its request header), the prefix rewrite, and a failover to the
other subset when every v1 instance is critical (no call fails).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from consul_discovery.client.chain.model import SplitterNode
from consul_discovery.client.client import ServiceClient
from consul_discovery.client.consul_source import ConsulSource
from tests.discovery_client.chain.consul_chain import stop_instances, write_entry
from tests.discovery_client.chain.transports import TRANSPORTS, Calling, calling, echo, serve_json
from tests.harness.agent import ConsulAgent
from tests.harness.forking import in_child

SERVICE = "shop"
INSTANCES = (("shop-v1-a", "1"), ("shop-v1-b", "1"), ("shop-v2", "2"))
SPLIT_CALLS = 1000


@pytest.fixture(scope="module")
def shop(chain_agent: ConsulAgent) -> Iterator[ConsulAgent]:
    """The three instances, registered with TTL checks, and the service's config entries."""
    servers = []
    for ident, version in INSTANCES:
        server = serve_json(echo, ident=ident, version=version)
        servers.append(server)
        body = {
            "ID": ident, "Name": SERVICE, "Address": "127.0.0.1",
            "Port": server.server_address[1], "Meta": {"version": version},
            "Check": {"CheckID": f"service:{ident}", "TTL": "1h", "Status": "passing"},
        }  # fmt: skip
        url = f"{chain_agent.url}/v1/agent/service/register"
        requests.put(url, json=body, timeout=5).raise_for_status()
    write_entry(chain_agent, {"Kind": "service-defaults", "Name": SERVICE, "Protocol": "http"})
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": SERVICE,
            "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": 'Service.Meta.version == "1"'},
                "v2": {"Filter": 'Service.Meta.version == "2"'},
            },
            "Failover": {"v1": {"ServiceSubset": "v2"}},
        },
    )
    write_entry(
        chain_agent,
        {
            "Kind": "service-splitter",
            "Name": SERVICE,
            "Splits": [
                {"Weight": 90, "ServiceSubset": "v1"},
                {"Weight": 10, "ServiceSubset": "v2"},
            ],
        },
    )
    write_entry(
        chain_agent,
        {
            "Kind": "service-router",
            "Name": SERVICE,
            "Routes": [
                {
                    "Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "1"}]}},
                    "Destination": {
                        "ServiceSubset": "v2",
                        "RequestHeaders": {"Set": {"x-routed": "canary"}},
                        "ResponseHeaders": {"Add": {"x-served-by": "canary"}},
                    },
                },
                {
                    "Match": {"HTTP": {"PathPrefix": "/api/"}},
                    "Destination": {"PrefixRewrite": "/"},
                },
            ],
        },
    )
    try:
        yield chain_agent
    finally:
        stop_instances(chain_agent, servers, (ident for ident, _ in INSTANCES))


def _ttl(agent: ConsulAgent, ident: str, status: str) -> None:
    verb = {"passing": "pass", "critical": "fail"}[status]
    url = f"{agent.url}/v1/agent/check/{verb}/service:{ident}"
    requests.put(url, timeout=5).raise_for_status()


@pytest.fixture(params=TRANSPORTS)
def transport(request, shop) -> Iterator[Calling]:
    """Calls to SERVICE through one transport (``tests.discovery_client.chain.transports``)."""
    with calling(request.param, shop.url, SERVICE) as through:
        yield through


def test_splitter_header_route_rewrite_and_failover(transport, shop):
    get, core, pause = transport.get, transport.core, transport.pause
    transport.until_chained(SERVICE)
    # The splitter: 90/10 between the subsets.
    versions = Counter(get("/x")["version"] for _ in range(SPLIT_CALLS))
    share = versions["2"] / SPLIT_CALLS
    print(f"\nv2 share {share:.3f} over {SPLIT_CALLS} calls")
    assert 0.06 <= share <= 0.14, versions
    # The header route: every call to v2, with the route's request header.
    canary = [get("/x", headers={"x-canary": "1"}) for _ in range(20)]
    assert {a["version"] for a in canary} == {"2"}
    assert {a["routed"] for a in canary} == {"canary"}
    assert {a["served_by"] for a in canary} == {"canary"}  # the response header added
    assert get("/x")["served_by"] is None
    # The prefix rewrite: /api/items reaches the instances as /items.
    assert get("/api/items?n=1")["path"] == "/items?n=1"
    # The failover: every v1 instance critical; v1's calls go to the v2 subset.
    for ident, version in INSTANCES:
        if version == "1":
            _ttl(shop, ident, "critical")
    try:
        v1 = [s for s in core._states.states() if s.target.filter and '"1"' in s.target.filter]  # type: ignore[attr-defined]
        assert len(v1) == 1, [s.target for s in core._states.states()]  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while v1[0].balancer.resolution is None or v1[0].balancer.resolution.instances:
            assert time.monotonic() < deadline, "v1's subset never emptied"
            pause(0.01)
        answers = [get("/x") for _ in range(100)]  # each asserts a 200
        assert {a["version"] for a in answers} == {"2"}
    finally:
        for ident, version in INSTANCES:
            if version == "1":
                _ttl(shop, ident, "passing")


def test_the_cli_shows_the_chain_and_where_a_request_goes(shop):
    from consul_discovery.client.cli import main

    def run(*argv: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        assert main(["--consul", shop.url, *argv], out=out, err=err) == 0, err.getvalue()
        return out.getvalue()

    table = run("chain", SERVICE)
    assert "x-canary=1" in table and "/api/*" in table and "90%" in table and "10%" in table
    assert "v1.shop.default.default.dc1 > v2.shop.default.default.dc1" in table  # failover
    data = json.loads(run("--json", "chain", SERVICE))
    assert not data["plain"] and not data["problems"]
    assert [r["route"] for r in data["routes"]] == [0, 1, 1, 2, 2]  # header, /api x2, default x2
    canary = json.loads(run("--json", "route", SERVICE, "GET", "/x", "-H", "X-Canary: 1"))
    assert canary["route"] == 0 and canary["targets"] == ["v2.shop.default.default.dc1"]
    api = json.loads(run("--json", "route", SERVICE, "GET", "/api/items?n=1"))
    assert api["route"] == 1 and api["path"] == "/items?n=1" and api["weight"] in (90, 10)
    assert "route" in run("route", SERVICE, "GET", "/")
    # A PATH without its "/" is routed as a call sends it (client.get(name, "api/items")
    # requests /api/items): it used to match no route and show the path as given.
    bare = json.loads(run("--json", "route", SERVICE, "GET", "api/items?n=1"))
    assert bare["route"] == 1 and bare["path"] == "/items?n=1", bare
    plain = run("chain", "consul")  # registered, no config entry: Consul's default chain
    assert "Consul's default chain" in plain
    out, err = io.StringIO(), io.StringIO()  # a name Consul knows nothing of
    assert main(["--consul", shop.url, "chain", "nothing-configured"], out=out, err=err) == 1
    assert "unknown service 'nothing-configured'" in err.getvalue() and out.getvalue() == ""


def _split_weights(router) -> tuple[float, ...]:
    chain = router.chain
    splitter = next(n for n in chain.nodes.values() if isinstance(n, SplitterNode))
    return tuple(s.weight for s in splitter.splits)


def _set_split(agent: ConsulAgent, v1: float) -> None:
    write_entry(
        agent,
        {
            "Kind": "service-splitter",
            "Name": SERVICE,
            "Splits": [
                {"Weight": v1, "ServiceSubset": "v1"},
                {"Weight": 100 - v1, "ServiceSubset": "v2"},
            ],
        },
    )


def test_a_threaded_source_keeps_watching_chains_in_a_forked_child(shop):
    routers: list = []
    with ConsulSource(shop.url) as source:
        source.watch_chain(SERVICE, routers.append)
        deadline = time.monotonic() + 10
        while not routers:
            assert time.monotonic() < deadline, "no chain before the fork"
            time.sleep(0.01)
        assert _split_weights(routers[-1]) == (90, 10)

        def child() -> bool:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if routers and _split_weights(routers[-1]) == (50, 50):
                    return True
                time.sleep(0.01)
            return False

        def parent() -> None:
            time.sleep(0.3)  # the child runs its restarted watches by now
            _set_split(shop, 50)

        try:
            in_child(child, parent, 20.0, "the child saw a frozen chain")
        finally:
            _set_split(shop, 90)


def test_a_chain_that_cannot_be_honoured_is_reported_once_and_calls_go_plain(shop, caplog):
    """A resolver asking for something the client cannot do (least_request over three
    choices): one WARNING naming it, and the service is called as a plain service."""
    server = serve_json(echo, ident="odd-1", version="1")
    body = {"ID": "odd-1", "Name": "odd", "Address": "127.0.0.1",
            "Port": server.server_address[1]}  # fmt: skip
    requests.put(f"{shop.url}/v1/agent/service/register", json=body, timeout=5).raise_for_status()
    write_entry(shop, {"Kind": "service-defaults", "Name": "odd", "Protocol": "http"})
    write_entry(shop, {"Kind": "service-resolver", "Name": "odd", "LoadBalancer": {
        "Policy": "least_request", "LeastRequestConfig": {"ChoiceCount": 3}}})  # fmt: skip
    caplog.set_level(logging.WARNING, logger="consul_discovery.client.chain")
    try:
        with ServiceClient(shop.url) as client:

            def warned() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "not honoured" in r.getMessage()]

            deadline = time.monotonic() + 10
            while not warned():
                assert time.monotonic() < deadline, "the unhonoured chain was never reported"
                assert client.get("odd", "/").status_code == 200
                time.sleep(0.02)
            assert "ChoiceCount 3" in warned()[0].getMessage()
            assert client.core.chain("odd") is None  # routed as a plain service
            assert {client.get("odd", "/").json()["instance"] for _ in range(5)} == {"odd-1"}
            assert len(warned()) == 1
        from consul_discovery.client.cli import main

        out, err = io.StringIO(), io.StringIO()  # the CLI says so too, not "default chain"
        assert main(["--consul", shop.url, "chain", "odd"], out=out, err=err) == 0
        lines = out.getvalue().splitlines()
        assert lines[0] == "odd: a chain the client cannot honour (called as a plain service)"
        assert lines[1].startswith("not honoured: ") and "ChoiceCount 3" in lines[1], lines
    finally:
        server.shutdown()
        server.server_close()
        requests.put(f"{shop.url}/v1/agent/service/deregister/odd", timeout=5)
