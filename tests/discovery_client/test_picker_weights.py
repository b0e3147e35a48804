"""Every policy honours Consul weights and derates warning instances (pure, seeded)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from consul_discovery.client.balancer import Balancer
from consul_discovery.client.config import POLICIES, ServiceConfig
from consul_discovery.client.health_entries import build_resolution
from consul_discovery.client.load import Endpoint, InstanceLoad
from consul_discovery.client.picker import build_picker, edf_schedule
from tests.discovery_client.fakes import FakeClock, instance

WARNING_SHARE = 1 / 11  # weights Passing 10 / Warning 1: one passing, one warning


def passing_warning_critical():
    return (
        instance("pass", weight_passing=10, weight_warning=1),
        instance("warn", weight_passing=10, weight_warning=1, health="warning"),
        instance("crit", weight_passing=10, weight_warning=1, health="critical"),
    )


def endpoints(*instances):
    return [Endpoint(i, InstanceLoad(i.id, now=0.0)) for i in instances]


@pytest.mark.parametrize("policy", POLICIES)
def test_idle_picks_follow_the_weights_and_never_a_critical_instance(policy):
    clock = FakeClock()
    balancer = Balancer("svc", ServiceConfig(policy=policy), clock=clock, rng=random.Random(5))
    balancer.update(build_resolution("svc", passing_warning_critical(), 1, 0.0))
    counts: Counter[str] = Counter()
    for _ in range(11_000):
        endpoint = balancer.pick()
        counts[endpoint.id] += 1
        started = balancer.begin(endpoint)
        clock.advance(0.002)  # every instance answers in 2 ms
        balancer.finish(endpoint, started, failed=False, responded=True)
    assert counts["crit"] == 0
    share = counts["warn"] / counts.total()
    if policy == "peak_ewma":
        # Cost divided by weight: at equal latency the warning instance wins a mixed draw
        # only once its cost is 10x lower, so it is derated at least by its weight ratio;
        # it is still called when both weight-drawn candidates are it (about w²).
        assert WARNING_SHARE**2 / 2 <= share <= WARNING_SHARE, counts
    else:
        assert share == pytest.approx(WARNING_SHARE, abs=0.015), (policy, counts)


def test_round_robin_with_weights_is_an_exact_edf_schedule():
    assert edf_schedule([1, 1, 1]) == (0, 1, 2)
    schedule = edf_schedule([3, 1])
    assert Counter(schedule) == {0: 3, 1: 1} and len(schedule) == 4
    assert edf_schedule([0, 2]) == (1, 1)  # weight 0: out of rotation
    big = edf_schedule([10_000, 1])  # scaled down, the light one still present
    assert len(big) <= 4097 and Counter(big)[1] == 1
    eps = endpoints(instance(1, weight_passing=10), instance(2, weight_passing=1))
    p = build_picker("round_robin", "svc", eps, rng=random.Random(1), clock=FakeClock())
    assert Counter(p.pick().id for _ in range(1100)) == {"i1": 1000, "i2": 100}
    # spread out, not in bursts: the light instance never waits more than one period
    seq = [p.pick().id for _ in range(22)]
    assert seq.count("i2") == 2


def test_least_request_under_load_compares_in_flight_per_weight():
    heavy, light = endpoints(instance(1, weight_passing=10), instance(2, weight_passing=1))
    p = build_picker(
        "least_request", "svc", [heavy, light], rng=random.Random(3), clock=FakeClock()
    )
    for _ in range(9):
        heavy.load.begin(retry=False)  # 9 in flight / 10 < 1 in flight / 1
    light.load.begin(retry=False)
    counts = Counter(p.pick().id for _ in range(2000))
    assert counts["i1"] > 0.97 * 2000  # heavy is lighter per unit of weight
    heavy.load.begin(retry=False)
    heavy.load.begin(retry=False)  # 11 / 10 > 1 / 1: now light wins every mixed draw
    counts = Counter(p.pick().id for _ in range(2000))
    mixed = 2 * (10 / 11) * (1 / 11)
    assert counts["i2"] / 2000 == pytest.approx(mixed + (1 / 11) ** 2, abs=0.03)


def test_peak_ewma_prefers_the_faster_of_two_weight_drawn_candidates():
    fast, slow = endpoints(instance(1, weight_passing=1), instance(2, weight_passing=3))
    clock = FakeClock()
    for ep, latency in ((fast, 0.001), (slow, 0.100)):
        ep.load.begin(retry=False)
        ep.load.finish(clock(), latency, failed=False)
    p = build_picker("peak_ewma", "svc", [fast, slow], rng=random.Random(2), clock=clock)
    counts = Counter(p.pick().id for _ in range(4000))
    # slow only when both draws are slow: (3/4)^2
    assert counts["i2"] / 4000 == pytest.approx(9 / 16, abs=0.03)


@pytest.mark.parametrize("policy", POLICIES)
def test_zero_weight_is_out_of_rotation_unless_all_are_zero(policy):
    eps = endpoints(instance(1, weight_passing=0, weight_warning=0), instance(2, weight_passing=2))
    p = build_picker(policy, "svc", eps, rng=random.Random(1), clock=FakeClock())
    assert Counter(p.pick().id for _ in range(300)) == {"i2": 300}
    zeros = endpoints(
        instance(1, weight_passing=0, weight_warning=0),
        instance(2, weight_passing=0, weight_warning=0),
    )
    p = build_picker(policy, "svc", zeros, rng=random.Random(1), clock=FakeClock())
    assert set(Counter(p.pick().id for _ in range(300))) == {"i1", "i2"}


def test_only_passing_leaves_warning_instances_out():
    """A chain subset's OnlyPassing (Target.only_passing): a warning instance is not
    derated but left out; by default it stays in."""
    everyone = build_resolution("svc", passing_warning_critical(), 1, 0.0)
    assert sorted(i.id for i in everyone.instances) == ["pass", "warn"]
    strict = build_resolution("svc", passing_warning_critical(), 1, 0.0, only_passing=True)
    assert [i.id for i in strict.instances] == ["pass"]
