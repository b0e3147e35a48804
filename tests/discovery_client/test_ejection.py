"""Passive outlier ejection: thresholds, caps, growing durations, expiry, re-registration."""

from __future__ import annotations

import random

import pytest

from consul_discovery.client.balancer import Balancer
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.ejection import EjectionPolicy
from tests.discovery_client.fakes import FakeClock, instance, resolution


def make(n: int, clock: FakeClock, **policy) -> Balancer:
    bal = Balancer(
        "svc",
        ServiceConfig(policy="round_robin"),
        ejection=EjectionPolicy(**policy),
        clock=clock,
        rng=random.Random(1),
    )
    bal.update(resolution(*(instance(i) for i in range(1, n + 1)), fetched_at=1.0))
    return bal


def fail(bal: Balancer, instance_id: str, times: int, *, failed: bool = True) -> None:
    """Record ``times`` outcomes on one instance, as the ServiceClient would."""
    for _ in range(times):
        ep = next(e for e in bal._endpoints if e.id == instance_id)
        started = bal.begin(ep)
        bal.finish(ep, started, failed=failed, responded=False)


def picked(bal: Balancer, n: int = 60) -> set[str]:
    return {bal.pick().id for _ in range(n)}


def test_max_ejected_rules():
    policy = EjectionPolicy(max_percent=50)
    assert [policy.max_ejected(n) for n in (0, 1, 2, 3, 4, 10)] == [0, 0, 1, 1, 2, 5]
    assert EjectionPolicy(max_percent=10).max_ejected(3) == 1  # one bad of three still goes
    assert EjectionPolicy(max_percent=100).max_ejected(3) == 2  # never the whole pool
    assert EjectionPolicy(max_percent=0).max_ejected(10) == 0
    assert EjectionPolicy(enabled=False).max_ejected(10) == 0


def test_duration_grows_with_each_ejection_and_is_capped():
    policy = EjectionPolicy(base_time=30, max_time=100)
    assert [policy.duration(n) for n in (1, 2, 3, 4)] == [30, 60, 90, 100]


def test_five_consecutive_failures_eject():
    clock = FakeClock()
    bal = make(3, clock)
    fail(bal, "i1", 4)
    assert "i1" in picked(bal)
    fail(bal, "i1", 1)
    assert picked(bal) == {"i2", "i3"}
    assert bal.ejections == 1
    assert {i.id: i.ejected for i in bal.instance_stats(clock())}["i1"] is True


def test_a_success_resets_the_streak():
    clock = FakeClock()
    bal = make(3, clock)
    fail(bal, "i1", 4)
    fail(bal, "i1", 1, failed=False)
    fail(bal, "i1", 4)
    assert "i1" in picked(bal)


def test_ejection_expires_after_base_time_then_doubles():
    clock = FakeClock()
    bal = make(3, clock, base_time=30, max_time=300)
    fail(bal, "i1", 5)
    clock.advance(29.9)
    assert "i1" not in picked(bal)
    clock.advance(0.2)
    assert "i1" in picked(bal)
    fail(bal, "i1", 5)
    clock.advance(59.9)
    assert "i1" not in picked(bal)
    clock.advance(0.2)
    assert "i1" in picked(bal)
    assert bal.load_of("i1").ejections == 2


def test_multiplier_resets_after_a_quiet_max_time():
    clock = FakeClock()
    bal = make(3, clock, base_time=10, max_time=50)
    fail(bal, "i1", 5)
    clock.advance(10 + 50 + 1)
    fail(bal, "i1", 5)
    assert bal.load_of("i1").ejections == 1
    assert bal.instance_stats(clock())[0].ejected_for == pytest.approx(10)


def test_never_more_than_max_percent_of_the_pool():
    clock = FakeClock()
    bal = make(4, clock, max_percent=50)
    for i in ("i1", "i2", "i3", "i4"):
        fail(bal, i, 5)
    ejected = [i.id for i in bal.instance_stats(clock()) if i.ejected]
    assert ejected == ["i1", "i2"]
    assert picked(bal) == {"i3", "i4"}
    # Once room frees up, the next failure of a still-failing instance ejects it.
    clock.advance(31)
    fail(bal, "i3", 1)
    assert bal.load_of("i3").is_ejected(clock.now)


def test_one_bad_instance_of_three_is_ejected_even_with_a_low_percent():
    clock = FakeClock()
    bal = make(3, clock, max_percent=10)
    fail(bal, "i2", 5)
    assert picked(bal) == {"i1", "i3"}


def test_single_instance_is_never_ejected():
    clock = FakeClock()
    bal = make(1, clock)
    fail(bal, "i1", 20)
    assert picked(bal) == {"i1"}


def test_returns_when_consul_shows_it_reregistered():
    clock = FakeClock()
    bal = make(3, clock)
    fail(bal, "i1", 5)
    assert "i1" not in picked(bal)
    # Its check failed, it left the passing set ...
    bal.update(resolution(instance(2), instance(3), index=2, fetched_at=2.0))
    # ... and came back: Consul vouches for it again.
    bal.update(resolution(instance(1), instance(2), instance(3), index=3, fetched_at=3.0))
    assert "i1" in picked(bal)


def test_still_registered_instance_stays_ejected_across_updates():
    clock = FakeClock()
    bal = make(3, clock)
    fail(bal, "i1", 5)
    bal.update(resolution(instance(1), instance(2), instance(3), index=2, fetched_at=2.0))
    assert "i1" not in picked(bal)


def test_pool_shrinking_to_only_ejected_instances_ignores_ejection():
    clock = FakeClock()
    bal = make(3, clock)
    fail(bal, "i1", 5)
    bal.update(resolution(instance(1), index=2, fetched_at=2.0))
    assert picked(bal) == {"i1"}


def test_disabled_ejection_never_ejects():
    clock = FakeClock()
    bal = make(3, clock, enabled=False)
    fail(bal, "i1", 50)
    assert "i1" in picked(bal)
