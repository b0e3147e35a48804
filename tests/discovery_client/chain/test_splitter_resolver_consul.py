"""service-splitter and service-resolver, every field we honour, against a real agent.

Each test writes config entries to a real Consul (``/v1/config``), fetches the chain
Consul compiled from them (``/v1/discovery-chain/<service>``) and checks our decision for
requests against two things: what the entry we wrote means, and what Consul compiled
for it (which compiled route a request takes, the node after it, the resolver target).
"""

from __future__ import annotations

from collections import Counter

import pytest
from requests.structures import CaseInsensitiveDict

from consul_discovery.client.chain import (
    RequestView,
    compile_chain,
)
from tests.discovery_client.chain.consul_chain import (
    fetch,
    health,
    http,
    register,
    target_of,
    view,
    write_entry,
)


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
