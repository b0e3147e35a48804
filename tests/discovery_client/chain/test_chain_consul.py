"""Every config entry kind and field we honour, against a real agent's compiled chain.

Each test writes config entries to a real Consul (``/v1/config``), fetches the chain
Consul compiled from them (``/v1/discovery-chain/<service>``) and checks our decision for
requests against two things: what the entry we wrote means, and what Consul compiled
for it (which compiled route a request takes, the node after it, the resolver target).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from urllib.parse import parse_qs

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from consul_discovery.client.chain import (
    ChainAnswer,
    DiscoveryChainQuery,
    RequestView,
    compile_chain,
)
from consul_discovery.connection.blocking import next_index
from tests.discovery_client.chain.consul_chain import (
    compiled_routes,
    fetch,
    health,
    register,
    resolvers_after,
    route_index,
    target_of,
    write_entry,
)


def http(service: str) -> dict:
    return {"Kind": "service-defaults", "Name": service, "Protocol": "http"}


def view(target: str = "/", method: str = "GET", headers: dict | None = None) -> RequestView:
    return RequestView.of(method, target, CaseInsensitiveDict(headers or {}))


def test_no_entries_and_protocol_only_are_plain(chain_agent):
    raw, router = fetch(chain_agent, "bare")
    assert raw["Default"] and raw["Protocol"] == "tcp"
    assert router.plain and not router.problems
    write_entry(chain_agent, http("bare-http"))
    raw, router = fetch(chain_agent, "bare-http")
    assert raw["Default"] and raw["Protocol"] == "http"
    assert router.plain and router.chain.protocol == "http"


ROUTER_CASES = [
    # (Match.HTTP written, destination service, requests that take it, requests that do not)
    ({"PathExact": "/exact"}, "r-exact", ["/exact"], ["/exact/", "/EXACT"]),
    ({"PathExact": "/fold", "CaseInsensitive": True}, "r-fold", ["/FOLD", "/fold"], ["/fold/x"]),
    ({"PathPrefix": "/pre/"}, "r-prefix", ["/pre/x", "/pre/"], ["/pre", "/prefix"]),
    ({"PathRegex": "/re/[0-9]+"}, "r-regex", ["/re/12"], ["/re/x", "/re/12/x"]),
    (
        {"PathPrefix": "/m", "Methods": ["PUT", "DELETE"]},
        "r-methods",
        ["PUT /m", "DELETE /m/1"],
        ["GET /m"],
    ),
    (
        {"PathPrefix": "/h", "Header": [{"Name": "x-p", "Present": True}]},
        "r-present",
        ["/h x-p:"],
        ["/h"],
    ),
    (
        {"PathPrefix": "/h", "Header": [{"Name": "x-e", "Exact": "yes"}]},
        "r-hexact",
        ["/h x-e:yes"],
        ["/h x-e:no"],
    ),
    (
        {"PathPrefix": "/h", "Header": [{"Name": "x-f", "Prefix": "ab"}]},
        "r-hprefix",
        ["/h x-f:abc"],
        ["/h x-f:cab"],
    ),
    (
        {"PathPrefix": "/h", "Header": [{"Name": "x-s", "Suffix": "yz"}]},
        "r-hsuffix",
        ["/h x-s:xyz"],
        ["/h x-s:yzx"],
    ),
    (
        {"PathPrefix": "/h", "Header": [{"Name": "x-r", "Regex": "v[0-9]"}]},
        "r-hregex",
        ["/h x-r:v7"],
        ["/h x-r:v77"],
    ),
    (
        {"PathPrefix": "/h", "Header": [{"Name": "x-i", "Exact": "no", "Invert": True}]},
        "r-hinvert",
        ["/h x-i:yes"],
        ["/h x-i:no", "/h"],  # absent: Envoy never matches a value rule
    ),
    (
        {"PathPrefix": "/q", "QueryParam": [{"Name": "p", "Present": True}]},
        "r-qpresent",
        ["/q?p="],
        ["/q?z=1"],
    ),
    (
        {"PathPrefix": "/q", "QueryParam": [{"Name": "e", "Exact": "1"}]},
        "r-qexact",
        ["/q?e=1"],
        ["/q?e=2"],
    ),
    (
        {"PathPrefix": "/q", "QueryParam": [{"Name": "x", "Regex": "a+"}]},
        "r-qregex",
        ["/q?x=aaa"],
        ["/q?x=ab"],
    ),
]


def _request(spec: str) -> RequestView:
    """'METHOD /path?query name:value' -> a RequestView."""
    parts = spec.split()
    method = parts.pop(0) if not parts[0].startswith("/") else "GET"
    target = parts.pop(0)
    headers = dict(p.split(":", 1) for p in parts)
    return view(target, method, headers)


@pytest.fixture(scope="module")
def router_main(chain_agent):
    """Service ``router-main`` with one route per ROUTER_CASES entry, each to its own service."""
    services = [dest for _, dest, _, _ in ROUTER_CASES]
    for name in ("router-main", *services):
        write_entry(chain_agent, http(name))
    write_entry(
        chain_agent,
        {
            "Kind": "service-router",
            "Name": "router-main",
            "Routes": [
                {"Match": {"HTTP": match}, "Destination": {"Service": dest}}
                for match, dest, _, _ in ROUTER_CASES
            ],
        },
    )
    return "router-main"


def test_router_matches_take_the_route_consul_compiled_for_them(chain_agent, router_main):
    raw, router = fetch(chain_agent, router_main)
    assert not router.plain, router.problems
    routes = compiled_routes(raw)
    assert len(routes) == len(ROUTER_CASES) + 1  # Consul appends the catch-all
    for match, dest, takes, misses in ROUTER_CASES:
        index = route_index(raw, match)
        (resolver,) = resolvers_after(raw, routes[index]["NextNode"])
        for spec in takes:
            decision = router.decide(_request(spec))
            assert decision.route == index, (spec, match, decision.route)
            assert decision.resolver == resolver
            assert decision.target.service == dest == target_of(raw, resolver)["Service"]
        for spec in misses:
            decision = router.decide(_request(spec))
            assert decision.route != index, (spec, match)
    catch_all = router.decide(view("/nothing-else"))
    assert catch_all.route == len(ROUTER_CASES)
    assert catch_all.target.service == "router-main"


def test_route_destination_fields(chain_agent):
    for name in ("dest-main", "dest-api"):
        write_entry(chain_agent, http(name))
    destination = {
        "Service": "dest-api",
        "PrefixRewrite": "/v1/",
        "RequestTimeout": "2500ms",
        "IdleTimeout": "9s",
        "NumRetries": 4,
        "RetryOnConnectFailure": True,
        "RetryOnStatusCodes": [503, 429],
        "RetryOn": ["gateway-error", "reset"],
        "RequestHeaders": {"Add": {"x-a": "1"}, "Set": {"x-s": "2"}, "Remove": ["x-r"]},
        "ResponseHeaders": {"Set": {"x-served-by": "chain"}},
    }
    write_entry(
        chain_agent,
        {
            "Kind": "service-router",
            "Name": "dest-main",
            "Routes": [
                {"Match": {"HTTP": {"PathPrefix": "/api/"}}, "Destination": destination},
                {"Match": {"HTTP": {"PathExact": "/only"}}, "Destination": {"NumRetries": 3}},
            ],
        },
    )
    raw, router = fetch(chain_agent, "dest-main")
    compiled = compiled_routes(raw)[route_index(raw, {"PathPrefix": "/api/"})]
    assert compiled["Definition"]["Destination"]["RequestTimeout"] == "2.5s"
    d = router.decide(view("/api/orders/1"))
    assert d.target.service == "dest-api"
    assert d.rewrite("/api/orders/1") == "/v1/orders/1"
    assert (d.request_timeout, d.idle_timeout) == (2.5, 9.0)
    retry = d.retry
    assert retry.max_attempts == 5
    assert retry.on_connect_failure and retry.on_reset
    assert retry.retries_status(503) and retry.retries_status(429)  # the listed codes
    assert retry.retries_status(502) and retry.retries_status(504)  # gateway-error
    assert not retry.retries_status(500)
    headers = CaseInsensitiveDict({"x-a": "0", "x-r": "gone"})
    for change in d.request_headers:
        change.apply(headers)
    assert dict(headers.lower_items()) == {"x-a": "0,1", "x-s": "2"}
    assert dict(d.response_headers[0].set) == {"x-served-by": "chain"}
    # NumRetries alone sets no retry condition: Envoy retries nothing (retry_on is empty).
    only = router.decide(view("/only"))
    assert only.retry is not None and only.retry.max_attempts == 1
    assert only.rewrite("/only") == "/only"


def test_splitter_weights_subsets_and_leg_headers(chain_agent):
    name = "canary"
    write_entry(chain_agent, http(name))
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": name,
            "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": 'Service.Meta.version == "1"'},
                "v2": {"Filter": 'Service.Meta.version == "2"', "OnlyPassing": True},
            },
        },
    )
    write_entry(
        chain_agent,
        {
            "Kind": "service-splitter",
            "Name": name,
            "Splits": [
                {"Weight": 90, "ServiceSubset": "v1"},
                {"Weight": 10, "ServiceSubset": "v2", "RequestHeaders": {"Set": {"x-canary": "1"}}},
            ],
        },
    )
    raw, router = fetch(chain_agent, name, seed=11)
    splits = raw["Nodes"][raw["StartNode"]]["Splits"]
    legs = Counter()
    n = 10_000
    for _ in range(n):
        d = router.decide(view("/"))
        legs[d.split] += 1
        assert d.resolver == splits[d.split]["NextNode"]
        assert d.target.id == target_of(raw, d.resolver)["ID"]
    assert legs[0] / n == pytest.approx(0.90, abs=0.01) and legs[1] / n == pytest.approx(
        0.10, abs=0.01
    )
    # The same chain with a draw that always lands in the last 10%: the v2 leg.
    canary = compile_chain(router.chain, random=lambda: 0.95).decide(view("/"))
    assert canary.split == 1
    assert canary.target.subset == "v2" and canary.target.only_passing
    assert dict(canary.request_headers[0].set) == {"x-canary": "1"}


def test_subset_filters_select_the_instances_consul_selects(chain_agent):
    name = "subsets"
    register(chain_agent, name, "s-v1-a", 9101, {"version": "1"})
    register(chain_agent, name, "s-v1-b", 9102, {"version": "1"}, status="warning")
    register(chain_agent, name, "s-v2-a", 9103, {"version": "2"})
    register(chain_agent, name, "s-v2-b", 9104, {"version": "2"}, status="warning")
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": name,
            "DefaultSubset": "v2",
            "Subsets": {
                "v1": {"Filter": 'Service.Meta.version == "1"'},
                "v2": {"Filter": 'Service.Meta.version == "2"', "OnlyPassing": True},
            },
        },
    )
    raw, router = fetch(chain_agent, name)
    target = router.decide(view("/")).target
    assert target.id == target_of(raw, raw["StartNode"])["ID"] == "v2.subsets.default.default.dc1"
    # The filter, as the chain carries it, selects in Consul's own health query:
    assert health(chain_agent, name, filter=target.filter) == ["s-v2-a", "s-v2-b"]
    # ... and OnlyPassing leaves the warning one out (the health query's ?passing):
    assert target.only_passing
    assert health(chain_agent, name, filter=target.filter, passing="1") == ["s-v2-a"]
    # A route to the other subset: its target carries its own filter, no OnlyPassing.
    write_entry(chain_agent, http(name))
    write_entry(
        chain_agent,
        {
            "Kind": "service-router",
            "Name": name,
            "Routes": [
                {
                    "Match": {"HTTP": {"Header": [{"Name": "x-v1", "Present": True}]}},
                    "Destination": {"ServiceSubset": "v1"},
                }
            ],
        },
    )
    raw, router = fetch(chain_agent, name)
    v1 = router.decide(view("/", headers={"x-v1": "y"})).target
    assert v1.id == "v1.subsets.default.default.dc1" and not v1.only_passing
    assert v1.filter == raw["Targets"][v1.id]["Subset"]["Filter"]
    assert health(chain_agent, name, filter=v1.filter) == ["s-v1-a", "s-v1-b"]
    assert router.decide(view("/")).target.id == target.id


def test_resolver_redirect_failover_and_timeouts(chain_agent):
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": "moved",
            "Redirect": {"Service": "home", "Datacenter": "dc2"},
        },
    )
    raw, router = fetch(chain_agent, "moved")
    moved = router.decide(view("/"))
    assert (moved.target.service, moved.target.datacenter) == ("home", "dc2")
    assert moved.target.remote_datacenter == "dc2" and not moved.target.local
    assert moved.target.id == target_of(raw, raw["StartNode"])["ID"]

    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": "fo",
            "ConnectTimeout": "750ms",
            "RequestTimeout": "4s",
            "DefaultSubset": "a",
            "Subsets": {
                "a": {"Filter": '"a" in Service.Tags'},
                "b": {"Filter": '"b" in Service.Tags'},
            },
            "Failover": {
                "a": {
                    "Targets": [{"Datacenter": "dc2"}, {"ServiceSubset": "b"}, {"Service": "spare"}]
                },
                "*": {"Datacenters": ["dc3"]},
            },
        },
    )
    raw, router = fetch(chain_agent, "fo")
    compiled = raw["Nodes"][raw["StartNode"]]["Resolver"]
    d = router.decide(view("/"))
    assert [t.id for t in d.targets] == [compiled["Target"], *compiled["Failover"]["Targets"]]
    assert [(t.service, t.subset, t.datacenter) for t in d.targets] == [
        ("fo", "a", "dc1"),
        ("fo", "a", "dc2"),
        ("fo", "b", "dc1"),
        ("spare", "", "dc1"),
    ]
    assert (d.connect_timeout, d.request_timeout) == (0.75, 4.0)
    assert {t.id for t in router.targets} == {t.id for t in d.targets}


@pytest.mark.parametrize(
    "policy", ["least_request", "round_robin", "random", "ring_hash", "maglev"]
)
def test_resolver_load_balancer_policies(chain_agent, policy):
    name = f"lb-{policy.replace('_', '-')}"
    write_entry(chain_agent, http(name))
    lb: dict = {"Policy": policy}
    if policy == "ring_hash":
        lb["RingHashConfig"] = {"MinimumRingSize": 2048, "MaximumRingSize": 4096}
    if policy == "least_request":
        lb["LeastRequestConfig"] = {"ChoiceCount": 2}
    if policy in ("ring_hash", "maglev"):
        lb["HashPolicies"] = [
            {"Field": "header", "FieldValue": "x-user"},
            {"Field": "cookie", "FieldValue": "session", "CookieConfig": {"Path": "/"}},
            {"Field": "query_parameter", "FieldValue": "shard", "Terminal": True},
            {"SourceIP": True},
        ]
    write_entry(chain_agent, {"Kind": "service-resolver", "Name": name, "LoadBalancer": lb})
    raw, router = fetch(chain_agent, name)
    assert not router.plain, router.problems
    d = router.decide(view("/"))
    assert d.load_balancer.policy == policy
    compiled = raw["Nodes"][raw["StartNode"]]["LoadBalancer"]
    assert compiled["Policy"] == policy
    if policy == "ring_hash":
        ring = d.load_balancer.ring_hash
        assert (ring.minimum_ring_size, ring.maximum_ring_size) == (2048, 4096)
    if policy in ("ring_hash", "maglev"):
        assert [(p.field, p.name, p.source_ip, p.terminal) for p in d.hash_policies] == [
            ("header", "x-user", False, False),
            ("cookie", "session", False, False),
            ("query_parameter", "shard", False, True),
            (None, "", True, False),
        ]
        alice = RequestView.of(
            "GET", "/?shard=3", CaseInsensitiveDict({"x-user": "alice"}), "10.1.1.1"
        )
        again = RequestView.of(
            "GET", "/?shard=3", CaseInsensitiveDict({"x-user": "alice"}), "10.9.9.9"
        )
        # Terminal at the query parameter: the source IP after it does not count.
        assert d.hash_key(alice) == d.hash_key(again) is not None
        assert d.hash_key(view("/")) is None
    else:
        assert d.hash_policies == ()


def test_a_chain_with_a_feature_we_do_not_honour_is_plain_and_says_why(chain_agent):
    name = "sticky"
    write_entry(chain_agent, http(name))
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": name,
            "LoadBalancer": {
                "Policy": "ring_hash",
                "HashPolicies": [
                    {"Field": "cookie", "FieldValue": "s", "CookieConfig": {"TTL": "60s"}}
                ],
            },
        },
    )
    _, router = fetch(chain_agent, name)
    assert router.plain
    assert any("CookieConfig.TTL" in p for p in router.problems), router.problems
    assert router.decide(view("/")).target.service == name  # the plain service


def test_every_honoured_router_field_survives_random_requests(chain_agent, router_main):
    """Property check: across random requests, our route is the first compiled route whose
    written match the request satisfies, by an independent evaluation of the config."""
    rng = random.Random(3)
    paths = ["/exact", "/EXACT", "/fold", "/pre/x", "/re/1", "/m", "/h", "/q", "/zzz"]
    raw, router = fetch(chain_agent, router_main)
    for _ in range(500):
        spec = rng.choice(paths)
        if rng.random() < 0.5:
            spec += rng.choice(["?p=", "?e=1", "?x=aa", "?e=2"])
        method = rng.choice(["GET", "PUT", "DELETE"])
        headers = {
            h: v
            for h, v in (("x-p", ""), ("x-e", "yes"), ("x-f", "abc"), ("x-r", "v1"), ("x-i", "no"))
            if rng.random() < 0.3
        }
        request = view(spec, method, headers)
        expected = next(
            i for i, route in enumerate(compiled_routes(raw)) if _written_match(route, request)
        )
        assert router.decide(request).route == expected, (spec, method, headers)


def _written_match(route: dict, request: RequestView) -> bool:
    """An independent, literal reading of one compiled route's Match.HTTP."""
    http_match = (route["Definition"].get("Match") or {}).get("HTTP") or {}
    path = request.path
    fold = http_match.get("CaseInsensitive")
    if "PathExact" in http_match:
        a, b = (
            (path.lower(), http_match["PathExact"].lower())
            if fold
            else (path, http_match["PathExact"])
        )
        if a != b:
            return False
    if "PathPrefix" in http_match:
        a, b = (
            (path.lower(), http_match["PathPrefix"].lower())
            if fold
            else (path, http_match["PathPrefix"])
        )
        if not a.startswith(b):
            return False
    if "PathRegex" in http_match and not re.fullmatch(http_match["PathRegex"], path):
        return False
    if "Methods" in http_match and request.method not in http_match["Methods"]:
        return False
    for h in http_match.get("Header", []):
        value = request.headers.get(h["Name"])
        if value is None:
            if not (h.get("Invert") and h.get("Present")):
                return False
            continue
        if "Exact" in h:
            ok = value == h["Exact"]
        elif "Regex" in h:
            ok = re.fullmatch(h["Regex"], value) is not None
        elif "Prefix" in h:
            ok = value.startswith(h["Prefix"])
        elif "Suffix" in h:
            ok = value.endswith(h["Suffix"])
        else:
            ok = True
        if ok == bool(h.get("Invert")):
            return False
    params = parse_qs(request.query, keep_blank_values=True)
    for q in http_match.get("QueryParam", []):
        values = params.get(q["Name"])
        if not values:
            return False
        if "Exact" in q and values[0] != q["Exact"]:
            return False
        if "Regex" in q and not re.fullmatch(q["Regex"], values[0]):
            return False
    return True


def test_the_chain_is_watched_with_blocking_queries(chain_agent):
    """The sans-IO query driven by a small loop (until the watch engine drives it):
    a blocking read waits while nothing changes, and returns soon after an entry write."""
    name = "watched"
    write_entry(chain_agent, http(name))
    set_split(chain_agent, name, 100)
    query = DiscoveryChainQuery(name, random=random.Random(1).random)
    session = requests.Session()

    def get(index: int, wait: float) -> ChainAnswer:
        req = query.request(index, wait)
        response = session.get(f"{chain_agent.url}{req.path}", params=req.params, timeout=wait + 5)
        return query.interpret(response.status_code, response.headers, response.content)

    first = get(0, 1.0)
    index = next_index(0, first.index)
    started = time.monotonic()
    idle = get(index, 0.5)  # nothing changes: Consul holds the request for the wait
    assert time.monotonic() - started >= 0.4 and idle.index == first.index

    seen: list[tuple[float, float]] = []  # (when, v1 weight) per chain delivered
    stop = threading.Event()

    def watch() -> None:
        at = index
        while not stop.is_set():
            answer = get(at, 2.0)
            at = next_index(at, answer.index)
            splits = answer.chain.nodes[answer.chain.start_node].splits
            seen.append((time.monotonic(), splits[0].weight))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    delays = []
    try:
        for weight in (0, 100, 10, 90, 50, 0, 100, 30, 70, 100):
            time.sleep(0.05)
            written = time.monotonic()
            set_split(chain_agent, name, weight)
            deadline = written + 5
            while time.monotonic() < deadline and not any(
                w == weight and t >= written for t, w in seen
            ):
                time.sleep(0.002)
            when = next((t for t, w in seen if w == weight and t >= written), None)
            assert when is not None, f"the watch never saw weight {weight}"
            delays.append(when - written)
    finally:
        stop.set()
        set_split(chain_agent, name, 100)  # ends the thread's blocking read
        thread.join(timeout=10)
        session.close()
    assert not thread.is_alive()
    print(f"\nchain change -> watch: max {max(delays) * 1000:.1f} ms over {len(delays)} writes")
    assert max(delays) < 1.0, delays


def set_split(agent, name: str, v1_weight: float) -> None:
    """Service ``name`` split between its subsets v1 and v2."""
    write_entry(
        agent,
        {
            "Kind": "service-resolver",
            "Name": name,
            "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": 'Service.Meta.version == "1"'},
                "v2": {"Filter": 'Service.Meta.version == "2"'},
            },
        },
    )
    write_entry(
        agent,
        {
            "Kind": "service-splitter",
            "Name": name,
            "Splits": [
                {"Weight": v1_weight, "ServiceSubset": "v1"},
                {"Weight": 100 - v1_weight, "ServiceSubset": "v2"},
            ],
        },
    )


def test_split_to_another_service_redirect_to_a_subset_and_wildcard_failover(chain_agent):
    for name in ("mixed", "mixed-next", "legacy"):
        write_entry(chain_agent, http(name))
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": "mixed-next",
            "Subsets": {"blue": {"Filter": '"blue" in Service.Tags'}},
            "Failover": {"*": {"Datacenters": ["dc3", "dc4"]}},
        },
    )
    # Any call to "legacy" goes to mixed-next's blue subset (a redirect to a subset).
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": "legacy",
            "Redirect": {"Service": "mixed-next", "ServiceSubset": "blue"},
        },
    )
    write_entry(
        chain_agent,
        {
            "Kind": "service-splitter",
            "Name": "mixed",
            "Splits": [
                {"Weight": 70, "ResponseHeaders": {"Add": {"x-leg": "old"}}},
                {"Weight": 30, "Service": "legacy", "ResponseHeaders": {"Remove": ["x-leg"]}},
            ],
        },
    )
    raw, router = fetch(chain_agent, "mixed")
    splits = raw["Nodes"][raw["StartNode"]]["Splits"]
    old = compile_chain(router.chain, random=lambda: 0.0).decide(view("/"))
    moved = compile_chain(router.chain, random=lambda: 0.99).decide(view("/"))
    assert (old.split, moved.split) == (0, 1)
    assert old.target.service == "mixed" and old.resolver == splits[0]["NextNode"]
    assert dict(old.response_headers[0].add) == {"x-leg": "old"}
    # The 30% leg names "legacy"; Consul compiled it through legacy's redirect.
    assert moved.resolver == splits[1]["NextNode"]
    assert (moved.target.service, moved.target.subset) == ("mixed-next", "blue")
    assert moved.target.filter == '"blue" in Service.Tags'
    assert moved.response_headers[0].remove == ("x-leg",)
    # The redirect target's resolver fails over by its "*" entry: dc3, then dc4.
    assert [(t.service, t.subset, t.datacenter) for t in moved.targets[1:]] == [
        ("mixed-next", "blue", "dc3"),
        ("mixed-next", "blue", "dc4"),
    ]
