"""Selection rules: each policy over a fixed snapshot, with an injected random source."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from consul_discovery.client.config import POLICIES
from consul_discovery.client.errors import NoHealthyInstanceError
from consul_discovery.client.load import Endpoint, InstanceLoad
from consul_discovery.client.picker import build_picker
from tests.discovery_client.fakes import FakeClock, instance


def endpoints(*instances):
    """Endpoints whose load was last observed now, on the pickers' clock."""
    now = FakeClock().now
    return [Endpoint(i, InstanceLoad(i.id, now=now)) for i in instances]


def picker(policy, eps, seed=1):
    return build_picker(policy, "svc", eps, rng=random.Random(seed), clock=FakeClock())


def count(p, n, exclude=()):
    return Counter(p.pick(exclude).id for _ in range(n))


def test_round_robin_is_exactly_even_over_three():
    p = picker("round_robin", endpoints(instance(1), instance(2), instance(3)))
    assert count(p, 3000) == {"i1": 1000, "i2": 1000, "i3": 1000}


def test_round_robin_cycles_in_order():
    p = picker("round_robin", endpoints(instance(1), instance(2), instance(3)))
    first = [p.pick().id for _ in range(6)]
    assert first[:3] == first[3:]
    assert sorted(first[:3]) == ["i1", "i2", "i3"]


def test_weighted_three_to_one_is_75_percent():
    eps = endpoints(instance(1, weight_passing=3), instance(2, weight_passing=1))
    counts = count(picker("weighted", eps, seed=7), 4000)
    assert 0.70 <= counts["i1"] / 4000 <= 0.80


def test_weighted_uses_the_warning_weight_for_instances_in_warning():
    eps = endpoints(
        instance(1, weight_passing=10, weight_warning=1, health="warning"),
        instance(2, weight_passing=1),
    )
    counts = count(picker("weighted", eps, seed=3), 4000)
    assert 0.45 <= counts["i1"] / 4000 <= 0.55


def test_weighted_zero_weight_is_out_of_rotation_unless_all_are_zero():
    eps = endpoints(instance(1, weight_passing=0, weight_warning=0), instance(2, weight_passing=1))
    assert count(picker("weighted", eps), 500) == {"i2": 500}
    zeros = endpoints(
        instance(1, weight_passing=0, weight_warning=0),
        instance(2, weight_passing=0, weight_warning=0),
    )
    assert set(count(picker("weighted", zeros), 200)) == {"i1", "i2"}


def test_random_is_roughly_uniform_and_seeded():
    eps = endpoints(instance(1), instance(2), instance(3))
    first, second = picker("random", eps, seed=5), picker("random", eps, seed=5)
    assert [first.pick().id for _ in range(20)] == [second.pick().id for _ in range(20)]
    counts = count(picker("random", eps), 3000)
    assert all(850 <= c <= 1150 for c in counts.values())


def test_least_request_prefers_fewer_in_flight():
    eps = endpoints(instance(1), instance(2), instance(3))
    for _ in range(5):
        eps[0].load.begin(retry=False)
    counts = count(picker("least_request", eps), 3000)
    # P2C only picks the busy one if it is drawn twice, which it never is (distinct pair).
    assert counts["i1"] == 0
    assert counts["i2"] > 1200 and counts["i3"] > 1200


def test_peak_ewma_prefers_lower_latency():
    eps = endpoints(instance(1), instance(2), instance(3))
    for e, latency in zip(eps, (1.0, 0.1, 0.1), strict=True):
        e.load.cost = latency
    counts = count(picker("peak_ewma", eps), 3000)
    assert counts["i1"] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_exclude_skips_tried_instances_while_any_is_left(policy):
    eps = endpoints(instance(1), instance(2), instance(3))
    p = picker(policy, eps)
    assert set(count(p, 300, exclude={"i1", "i2"})) == {"i3"}
    assert set(count(p, 300, exclude=["i1"])) == {"i2", "i3"}
    # Everything tried: pick among all rather than fail.
    assert set(count(p, 300, exclude={"i1", "i2", "i3"})) == {"i1", "i2", "i3"}


@pytest.mark.parametrize("policy", ["round_robin", "least_request", "peak_ewma", "weighted"])
def test_single_instance(policy):
    p = picker(policy, endpoints(instance(1)))
    assert count(p, 10) == {"i1": 10}


def test_empty_picker_raises_no_healthy_instance():
    p = build_picker(
        "round_robin", "svc", [], rng=random.Random(), clock=FakeClock(), empty_detail="why"
    )
    with pytest.raises(NoHealthyInstanceError, match=r"svc.*why"):
        p.pick()


def test_unknown_policy_is_a_value_error():
    with pytest.raises(ValueError, match="unknown policy"):
        build_picker(
            "fastest", "svc", endpoints(instance(1)), rng=random.Random(), clock=FakeClock()
        )
