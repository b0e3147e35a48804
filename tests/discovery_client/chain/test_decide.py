"""Deciding per request from a compiled chain (pure, injected random source)."""

from __future__ import annotations

import copy
import json
import logging
import random
from collections import Counter

import pytest
from requests.structures import CaseInsensitiveDict

from consul_discovery.client.chain import (
    ChainReporter,
    ChainWatch,
    DiscoveryChainQuery,
    HashPolicy,
    RequestView,
    compile_chain,
    parse_chain,
    plain_router,
    request_hash,
)
from consul_discovery.client.errors import (
    ConsulPermissionError,
    ConsulQueryError,
    ConsulUnavailableError,
)
from consul_discovery.connection.exchange import Response
from consul_discovery.connection.resource import Poll
from tests.discovery_client.chain.chains import canary_chain, default_chain


def router_of(answer, seed=1):
    return compile_chain(parse_chain(answer), random=random.Random(seed).random)


def view(target="/", method="GET", **headers):
    names = CaseInsensitiveDict({k.replace("_", "-"): v for k, v in headers.items()})
    return RequestView.of(method, target, names)


def test_the_default_chain_is_plain_and_decides_the_plain_service():
    router = router_of(default_chain("web"))
    assert router.plain and not router.problems
    decision = router.decide(view("/x"))
    assert decision.target.service == "web" and decision.target.filter is None
    assert [t.service for t in router.targets] == ["web"]


def test_routes_are_tried_in_order_and_the_first_match_wins():
    router = router_of(canary_chain())
    assert not router.plain
    canary = router.decide(view("/api/orders", x_canary="1"))
    assert (canary.route, canary.split) == (0, None)
    assert canary.target.id == "v2.web.default.default.dc1"
    assert canary.request_timeout == 2.0  # the route's own
    api = router.decide(view("/api/orders"))
    assert api.route == 1 and api.split in (0, 1)


def test_prefix_rewrite_replaces_the_matched_prefix():
    decision = router_of(canary_chain()).decide(view("/api/orders/7"))
    assert decision.rewrite("/api/orders/7") == "/orders/7"
    plain = router_of(canary_chain()).decide(view("/orders/7"))
    assert plain.rewrite("/orders/7") == "/orders/7"


def test_timeouts_retry_and_headers_come_from_route_split_and_resolver():
    router = router_of(canary_chain(weights=(100, 0)))
    api = router.decide(view("/api/x"))
    assert api.target.id == "v1.web.default.default.dc1"
    assert api.request_timeout == 7.0  # no route timeout: the resolver's
    assert api.connect_timeout == 3.0
    assert api.retry.max_attempts == 3
    assert api.retry.on_connect_failure and not api.retry.on_reset
    assert api.retry.retries_status(503) and not api.retry.retries_status(502)
    v2 = router_of(canary_chain(weights=(0, 100))).decide(view("/x"))
    assert v2.target.only_passing and v2.retry is None
    headers = CaseInsensitiveDict({"x-leg": "old"})
    for change in v2.request_headers:
        change.apply(headers)
    assert headers["x-leg"] == "v2"


@pytest.mark.parametrize("weights", [(90, 10), (50, 50), (10, 90), (99.99, 0.01)])
def test_split_shares_follow_the_compiled_weights(weights):
    router = router_of(canary_chain(weights=weights), seed=7)
    n = 20_000
    legs = Counter(router.decide(view("/x")).split for _ in range(n))
    for leg, weight in enumerate(weights):
        assert legs[leg] / n == pytest.approx(weight / 100, abs=0.01), legs


def test_a_zero_weight_leg_is_never_chosen():
    router = router_of(canary_chain(weights=(100, 0)))
    assert {router.decide(view("/x")).split for _ in range(2000)} == {0}


def test_failover_targets_follow_the_primary_in_order():
    answer = copy.deepcopy(canary_chain())
    body = answer["Chain"]
    v1 = "resolver:v1.web.default.default.dc1"
    dc2 = dict(body["Targets"]["v1.web.default.default.dc1"])
    dc2.update(ID="v1.web.default.default.dc2", Datacenter="dc2")
    body["Targets"][dc2["ID"]] = dc2
    body["Nodes"][v1]["Resolver"]["Failover"] = {
        "Targets": ["v1.web.default.default.dc2", "v2.web.default.default.dc1"]
    }
    router = compile_chain(parse_chain(answer), random=lambda: 0.0)  # always leg 0: v1
    decision = router.decide(view("/x"))
    assert [t.id for t in decision.targets] == [
        "v1.web.default.default.dc1",
        "v1.web.default.default.dc2",
        "v2.web.default.default.dc1",
    ]
    assert [t.remote_datacenter for t in decision.targets] == [None, "dc2", None]
    assert {t.id for t in router.targets} >= {t.id for t in decision.targets}


def test_an_unsupported_chain_is_plain_with_its_problems():
    answer = copy.deepcopy(canary_chain())
    answer["Chain"]["Targets"]["v1.web.default.default.dc1"]["Peer"] = "elsewhere"
    router = router_of(answer)
    assert router.plain and any("Peer" in p for p in router.problems)
    assert router.decide(view("/api/x")).target.service == "web"


def test_a_regex_python_cannot_compile_makes_the_chain_plain():
    answer = copy.deepcopy(canary_chain())
    routes = answer["Chain"]["Nodes"]["router:web.default.default"]["Routes"]
    routes[0]["Definition"]["Match"]["HTTP"]["Header"][0] = {"Name": "x", "Regex": "(unclosed"}
    router = router_of(answer)
    assert router.plain and "cannot compile" in router.problems[0]


def test_the_reporter_says_it_once_per_distinct_problem(caplog):
    reporter = ChainReporter()
    bad = plain_router("web", "Targets[x].Peer ('p')")
    with caplog.at_level(logging.INFO, logger="consul_discovery.client.chain"):
        assert reporter.report(bad)
        assert not reporter.report(plain_router("web", "Targets[x].Peer ('p')"))
        assert reporter.report(router_of(canary_chain()))  # honoured again
        assert not reporter.report(router_of(canary_chain()))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not honoured" in warnings[0].getMessage() and "Peer" in warnings[0].getMessage()
    assert any("honoured again" in r.getMessage() for r in caplog.records)


def test_hash_policies_header_cookie_query_source_and_terminal():
    header = HashPolicy("header", "x-user")
    cookie = HashPolicy("cookie", "session")
    query = HashPolicy("query_parameter", "shard")
    source = HashPolicy(source_ip=True, terminal=True)
    alice = RequestView("GET", "/", CaseInsensitiveDict({"X-User": "alice"}), "10.0.0.1")
    assert request_hash((header,), alice) == request_hash((header,), alice)
    assert request_hash((header,), alice) != request_hash(
        (header,), RequestView("GET", "/", CaseInsensitiveDict({"x-user": "bob"}))
    )
    assert request_hash((header,), view("/")) is None  # no value: pick at random
    with_cookie = view("/", cookie='a=1; session="s-1"; b=2')
    assert request_hash((cookie,), with_cookie) is not None
    assert request_hash((cookie,), with_cookie) == request_hash(
        (cookie,), view("/", cookie="session=s-1")
    )
    assert request_hash((query,), RequestView("GET", "/?shard=3", {})) is not None
    # Terminal: once the source IP gave a value, the header after it is not folded in.
    assert request_hash((source, header), alice) == request_hash((source,), alice)
    assert request_hash((header, source), alice) != request_hash((header,), alice)


def _watch(query: DiscoveryChainQuery) -> ChainWatch:
    return ChainWatch(query, "http://127.0.0.1:8500")


def test_the_watch_builds_blocking_requests_and_maps_refusals():
    query = DiscoveryChainQuery("my svc", random=random.Random(1).random, datacenter="dc2")
    watch = _watch(query)
    first = watch.request(Poll(0, 30.0, resolved=False))
    assert first.path == "/v1/discovery-chain/my%20svc" and dict(first.params) == {
        "compile-dc": "dc2"
    }
    blocking = watch.request(Poll(42, 30.0, resolved=True))
    assert dict(blocking.params) == {"index": "42", "wait": "30000ms", "compile-dc": "dc2"}
    assert blocking.timeout > 30.0
    denied = (
        "Permission denied: token with AccessorID 'abc' lacks permission 'service:read' "
        'on "my svc"'
    )
    with pytest.raises(ConsulPermissionError, match="service:read"):
        watch.interpret(Response(403, {}, denied.encode()))
    with pytest.raises(ConsulUnavailableError):
        watch.interpret(Response(500, {}, b"No cluster leader"))
    with pytest.raises(ConsulQueryError):
        watch.interpret(Response(400, {}, b"bad"))


def test_an_unreadable_answer_is_a_plain_router_not_an_error():
    query = DiscoveryChainQuery("web", random=random.random)
    watch = _watch(query)
    answer = watch.interpret(Response(200, {"X-Consul-Index": "9"}, b"{not json"))
    assert answer.index == 9 and answer.chain is None
    assert answer.router.plain and "unreadable" in answer.router.problems[0]
    body = json.dumps(default_chain()).encode()
    ok = watch.interpret(Response(200, {"x-consul-index": "10"}, body))
    assert ok.index == 10 and ok.router.plain and not ok.router.problems
    assert watch.same(ok, query.read(11, body)) and not watch.same(ok, answer)
    again = query.read(11, json.dumps(default_chain()))
    assert again.same(ok) and not again.same(answer)
    canary = query.read(12, json.dumps(canary_chain()))
    assert not canary.same(ok) and canary.same(query.read(13, json.dumps(canary_chain())))
