"""Reading Consul's discovery-chain answer: values, durations, unsupported features, errors."""

from __future__ import annotations

import copy

import pytest

from consul_discovery.client.chain import (
    ChainFormatError,
    ChainRetry,
    parse_chain,
    parse_duration,
)
from consul_discovery.client.chain.model import ResolverNode, RouterNode, SplitterNode
from tests.discovery_client.chain.chains import canary_chain, default_chain


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("5s", 5.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("10ns", 1e-8),
        (7_000_000_000, 7.0),
        (0, None),
        ("", None),
        ("0s", None),
        (None, None),
    ],
)
def test_durations_in_both_of_consuls_forms(raw, seconds):
    assert parse_duration(raw, "x") == (pytest.approx(seconds) if seconds else None)


@pytest.mark.parametrize("raw", ["5", "s", "5 s", "-1s", -5, True, [1]])
def test_a_bad_duration_names_where_it_is(raw):
    with pytest.raises(ChainFormatError, match=r"Resolver\.ConnectTimeout"):
        parse_duration(raw, "Resolver.ConnectTimeout")


def test_the_default_chain_is_flagged_default_with_one_resolver():
    chain = parse_chain(default_chain("web"))
    assert chain.default and not chain.unsupported
    assert chain.protocol == "tcp" and chain.datacenter == "dc1"
    start = chain.nodes[chain.start_node]
    assert isinstance(start, ResolverNode) and start.default
    assert start.connect_timeout == 5.0
    target = chain.targets[start.target]
    assert (target.service, target.filter, target.local, target.remote_datacenter) == (
        "web",
        None,
        True,
        None,
    )


def test_the_canary_chain_reads_every_node():
    chain = parse_chain(canary_chain())
    assert not chain.default and not chain.unsupported and chain.protocol == "http"
    router = chain.nodes[chain.start_node]
    assert isinstance(router, RouterNode) and len(router.routes) == 3
    header_route, api_route, _ = router.routes
    assert header_route.match.headers[0].exact == "1"
    assert header_route.destination.request_timeout == 2.0
    assert api_route.destination.prefix_rewrite == "/"
    assert api_route.destination.retry == ChainRetry(
        num_retries=2,
        conditions=frozenset({"connect-failure", "retriable-status-codes"}),
        status_codes=frozenset({503}),
    )
    splitter = chain.nodes[api_route.next_node]
    assert isinstance(splitter, SplitterNode)
    assert [s.weight for s in splitter.splits] == [90.0, 10.0]
    assert dict(splitter.splits[1].request_headers.set) == {"x-leg": "v2"}
    v1 = chain.nodes[splitter.splits[0].next_node]
    assert isinstance(v1, ResolverNode)
    assert (v1.connect_timeout, v1.request_timeout) == (3.0, 7.0)
    v2 = chain.targets["v2.web.default.default.dc1"]
    assert v2.filter == 'Service.Meta.version == "2"' and v2.only_passing and v2.subset == "v2"


def test_a_remote_target_is_not_local():
    answer = canary_chain()
    answer["Chain"]["Targets"]["v1.web.default.default.dc1"]["Datacenter"] = "dc2"
    target = parse_chain(answer).targets["v1.web.default.default.dc1"]
    assert not target.local and target.remote_datacenter == "dc2"


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("Chain", "EnvoyExtensions"), [{"Name": "lua"}], "Chain.EnvoyExtensions"),
        (("Chain", "Namespace"), "team-a", "Consul Enterprise"),
        (("Target", "Peer"), "other-cluster", "Peer"),
        (("Target", "External"), True, "External"),
        (("Resolver", "PrioritizeByLocality"), {"Mode": "failover"}, "PrioritizeByLocality"),
        (("Failover", "Policy"), {"Mode": "order-by-locality"}, "Failover.Policy"),
        (("Route", "SomethingNew"), "x", "SomethingNew"),
        (("LoadBalancer", "Policy"), "weighted_zones", "Policy 'weighted_zones'"),
        (("LoadBalancer", "ChoiceCount"), 3, "ChoiceCount 3"),
        (("LoadBalancer", "CookieTTL"), "10s", "CookieConfig.TTL"),
        (("Route", "RetryOn"), ["made-up"], "RetryOn 'made-up'"),
    ],
)
def test_an_unsupported_feature_is_named(path, value, named):
    answer = copy.deepcopy(canary_chain())
    body = answer["Chain"]
    v1 = "resolver:v1.web.default.default.dc1"
    where, key = path
    if where == "Chain":
        body[key] = value
    elif where == "Target":
        body["Targets"]["v1.web.default.default.dc1"][key] = value
    elif where == "Resolver":
        body["Nodes"][v1]["Resolver"][key] = value
    elif where == "Failover":
        body["Nodes"][v1]["Resolver"]["Failover"] = {"Targets": [], key: value}
    elif where == "Route":
        route = body["Nodes"]["router:web.default.default"]["Routes"][0]["Definition"]
        if key == "RetryOn":
            route["Destination"]["RetryOn"] = value
        else:
            route[key] = value
    elif key == "Policy":
        body["Nodes"][v1]["LoadBalancer"] = {"Policy": value}
    elif key == "ChoiceCount":
        body["Nodes"][v1]["LoadBalancer"] = {
            "Policy": "least_request",
            "LeastRequestConfig": {"ChoiceCount": value},
        }
    else:
        body["Nodes"][v1]["LoadBalancer"] = {
            "Policy": "ring_hash",
            "HashPolicies": [
                {"Field": "cookie", "FieldValue": "s", "CookieConfig": {"TTL": value}}
            ],
        }
    chain = parse_chain(answer)
    assert chain.unsupported, "the feature must be reported"
    assert any(named in problem for problem in chain.unsupported), chain.unsupported


def test_plumbing_and_inert_retry_conditions_are_not_problems():
    answer = copy.deepcopy(canary_chain())
    body = answer["Chain"]
    body["CustomizationHash"] = "abc"
    body["ServiceMeta"] = {"owner": "team"}
    route = body["Nodes"]["router:web.default.default"]["Routes"][1]["Definition"]
    route["Destination"]["RetryOn"] = ["unavailable", "refused-stream", "envoy-ratelimited", "5xx"]
    route["Destination"]["IdleTimeout"] = "9s"
    chain = parse_chain(answer)
    assert not chain.unsupported
    destination = chain.nodes[chain.start_node].routes[1].destination
    assert destination.idle_timeout == 9.0
    assert destination.retry.conditions == {"connect-failure", "retriable-status-codes", "5xx"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.pop("StartNode"), "StartNode"),
        (lambda c: c.__setitem__("StartNode", "router:nope"), "no node 'router:nope'"),
        (
            lambda c: c["Nodes"]["router:web.default.default"].__setitem__("Type", "mirror"),
            "mirror",
        ),
        (
            lambda c: c["Targets"].pop("v2.web.default.default.dc1"),
            "no target 'v2.web.default.default.dc1'",
        ),
        (
            lambda c: c["Nodes"]["router:web.default.default"].__setitem__("Routes", {}),
            "a list",
        ),
    ],
)
def test_a_malformed_answer_says_what_is_wrong(mutate, message):
    answer = copy.deepcopy(canary_chain())
    mutate(answer["Chain"])
    with pytest.raises(ChainFormatError, match=message):
        parse_chain(answer)


def test_no_chain_at_all_is_malformed():
    with pytest.raises(ChainFormatError, match="no Chain"):
        parse_chain({})
