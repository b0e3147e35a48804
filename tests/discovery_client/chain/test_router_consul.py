"""service-defaults and service-router, every field we honour, against a real agent.

Each test writes config entries to a real Consul (``/v1/config``), fetches the chain
Consul compiled from them (``/v1/discovery-chain/<service>``) and checks our decision for
requests against two things: what the entry we wrote means, and what Consul compiled
for it (which compiled route a request takes, the node after it, the resolver target).
"""

from __future__ import annotations

import random
import re
from urllib.parse import parse_qs

import pytest
from requests.structures import CaseInsensitiveDict

from consul_discovery.client.chain import (
    RequestView,
)
from tests.discovery_client.chain.consul_chain import (
    compiled_routes,
    fetch,
    http,
    resolvers_after,
    route_index,
    target_of,
    view,
    write_entry,
)


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
