"""Zone-aware routing: the rule (pure, injected random source) and Consul's locality fields."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import requests

from consul_discovery.client.health_entries import instances_from_entries
from consul_discovery.client.load import Endpoint, InstanceLoad
from consul_discovery.client.locality import LocalityPicker, zone_shares
from tests.discovery_client.fakes import FakeClock, instance
from tests.harness.agent import running_agent


def endpoints(*instances):
    return [Endpoint(i, InstanceLoad(i.id, now=0.0)) for i in instances]


def zoned(zone: str, count: int, start: int = 0, **kw):
    return [instance(f"{zone}-{n}", zone=zone, **kw) for n in range(start, start + count)]


def locality_picker(eps, local="a", policy="least_request", seed=1, **kw):
    return LocalityPicker(
        policy, "svc", eps, local, rng=random.Random(seed), clock=FakeClock(), **kw
    )


def zone_counts(picker, n=20_000, exclude=()):
    return Counter(picker.pick(exclude).instance.zone for _ in range(n))


def test_the_rule_keeps_calls_local_while_the_zone_holds_its_share():
    assert zone_shares("a", {"a": 3, "b": 3}) == {"a": 1.0}
    assert zone_shares("a", {"a": 5, "b": 3}) == {"a": 1.0}
    assert zone_shares("a", {"a": 3, "b": 3, "c": 3}) == {"a": 1.0}


def test_the_rule_spills_the_deficit_in_proportion_to_spare_capacity():
    # a lost half its capacity: it holds 1/3 of the healthy capacity against 1/2 wanted.
    shares = zone_shares("a", {"a": 2, "b": 4})
    assert shares["a"] == pytest.approx(2 / 3) and shares["b"] == pytest.approx(1 / 3)
    # Three zones: the spill goes to b and c by their spare (healthy - wanted) share.
    shares = zone_shares("a", {"a": 1, "b": 4, "c": 2})
    wanted = 1 / 3
    assert shares["a"] == pytest.approx((1 / 7) / wanted)
    spare_b, spare_c = 4 / 7 - wanted, 2 / 7 - wanted
    assert spare_c < 0 and "c" not in shares  # c has no spare: it gets none of a's calls
    assert shares["b"] == pytest.approx(1 - (1 / 7) / wanted)
    assert sum(shares.values()) == pytest.approx(1.0) and spare_b > 0


def test_the_rule_with_no_local_capacity_or_zone_uses_the_others():
    assert zone_shares("a", {"a": 0, "b": 3, "c": 1}) == {"b": 0.75, "c": 0.25}
    assert zone_shares("", {"a": 1, "b": 1}) == {"a": 0.5, "b": 0.5}
    assert zone_shares("a", {}) == {}


def test_the_rule_reads_an_explicit_caller_distribution():
    # 80% of callers sit in a; a holds half the capacity: a keeps 5/8 of its own calls.
    shares = zone_shares("a", {"a": 1, "b": 1}, callers={"a": 8, "b": 2})
    assert shares["a"] == pytest.approx(0.5 / 0.8) and shares["b"] == pytest.approx(3 / 8)
    # b's callers are few: b keeps everything local.
    assert zone_shares("b", {"a": 1, "b": 1}, callers={"a": 8, "b": 2}) == {"b": 1.0}


@pytest.mark.parametrize("policy", ["round_robin", "random", "least_request", "peak_ewma"])
def test_equal_capacity_in_two_zones_keeps_cross_zone_calls_under_5_percent(policy):
    picker = locality_picker(endpoints(*zoned("a", 3), *zoned("b", 3)), policy=policy)
    counts = zone_counts(picker)
    cross = counts["b"] / counts.total()
    print(f"\n{policy}: cross-zone share {cross:.4f}")
    assert cross <= 0.05


def test_all_local_instances_gone_sends_every_pick_to_the_other_zone():
    picker = locality_picker(endpoints(*zoned("b", 3)))
    assert picker.shares == {"b": 1.0}
    assert zone_counts(picker, 5000) == {"b": 5000}


def test_a_short_local_zone_spills_the_measured_deficit():
    # a has 1 of its 3 instances left; b has 3: a holds 1/4 against 1/2 wanted.
    picker = locality_picker(endpoints(*zoned("a", 1), *zoned("b", 3)), seed=9)
    counts = zone_counts(picker)
    assert counts["a"] / counts.total() == pytest.approx(0.5, abs=0.015)


def test_weights_count_as_capacity():
    eps = endpoints(*zoned("a", 2, weight_passing=1), *zoned("b", 2, weight_passing=3))
    assert locality_picker(eps).shares["a"] == pytest.approx((2 / 8) / 0.5)


def test_a_retry_after_every_local_instance_was_tried_goes_to_another_zone():
    picker = locality_picker(endpoints(*zoned("a", 2), *zoned("b", 2)))
    tried = {"a-0", "a-1"}
    assert zone_counts(picker, 500, exclude=tried) == {"b": 500}
    # ... and with one local left untried, it stays local.
    assert zone_counts(picker, 500, exclude={"a-0"}) == {"a": 500}


def test_no_zone_for_the_caller_balances_over_everything():
    picker = locality_picker(endpoints(*zoned("a", 2), *zoned("b", 2)), local="")
    counts = zone_counts(picker)
    assert counts["a"] / counts.total() == pytest.approx(0.5, abs=0.02)


def test_consistent_hashing_is_not_combined_with_zones():
    with pytest.raises(ValueError, match="ring_hash"):
        locality_picker(endpoints(*zoned("a", 1)), policy="ring_hash")


def test_instances_carry_the_locality_consul_reports():
    """Service.Locality when the registration sets one, else the agent's (Node.Locality)."""
    with running_agent(
        name="zoned", extra_args=["-hcl", 'locality { region = "eu" zone = "eu-1b" }']
    ) as agent:
        base = f"{agent.url}/v1/agent/service/register"
        own = {"Region": "eu", "Zone": "eu-1c"}
        for ident, locality in (("inherits", None), ("own", own)):
            body = {"Name": "zoned", "ID": ident, "Port": 80, "Address": "127.0.0.1"}
            if locality:
                body["Locality"] = locality
            requests.put(base, json=body, timeout=5).raise_for_status()
        entries = requests.get(f"{agent.url}/v1/health/service/zoned", timeout=5).json()
    found = {i.id: (i.region, i.zone) for i in instances_from_entries(entries)}
    assert found == {"inherits": ("eu", "eu-1b"), "own": ("eu", "eu-1c")}


def test_a_balancer_with_the_callers_zone_prefers_it_and_spills_when_it_empties():
    """``ServiceConfig(zone=...)``: the Balancer picks through LocalityPicker; equal
    capacity in two zones keeps every pick local; the local zone gone, the other serves."""
    from consul_discovery.client.balancer import Balancer
    from consul_discovery.client.config import ServiceConfig
    from tests.discovery_client.fakes import resolution

    clock = FakeClock()
    members = [instance(f"a{n}", zone="a") for n in range(2)]
    members += [instance(f"b{n}", zone="b") for n in range(2)]
    balancer = Balancer(
        "svc", ServiceConfig(policy="round_robin", zone="a"), clock=clock, rng=random.Random(3)
    )
    balancer.update(resolution(*members))
    picks = Counter(balancer.pick().instance.zone for _ in range(2000))
    assert picks == {"a": 2000}
    balancer.update(resolution(*members[2:], index=2))
    assert Counter(balancer.pick().instance.zone for _ in range(200)) == {"b": 200}
    with pytest.raises(ValueError, match="ring_hash"):
        ServiceConfig(policy="ring_hash", zone="a")
