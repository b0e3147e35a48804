"""Consistent hashing: ring_hash and maglev pickers (pure, seeded, no clock)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from consul_discovery.client.hashing import (
    MaglevPicker,
    RingHashPicker,
    build_maglev_table,
    combine,
    hash64,
)
from consul_discovery.client.load import Endpoint, InstanceLoad
from consul_discovery.client.picker import build_picker
from tests.discovery_client.fakes import FakeClock, instance

HASH_POLICIES = ("ring_hash", "maglev")
KEYS = [hash64(f"user-{n}") for n in range(10_000)]


def endpoints(*instances):
    return [Endpoint(i, InstanceLoad(i.id, now=0.0)) for i in instances]


def picker(policy, eps, seed=1):
    return build_picker(policy, "svc", eps, rng=random.Random(seed), clock=FakeClock())


def owners(p, keys=KEYS, exclude=()):
    return [p.pick(exclude, hash_key=k).id for k in keys]


def test_hash64_is_stable_across_processes():
    # Pinned values: a change here sends every key to another instance on upgrade, and
    # two client versions side by side would disagree (Python's hash() differs per process).
    assert hash64("user-1") == 0x88E1EA21865AAC9A
    assert hash64("a", seed=1) == 0x09869BC99CA23923
    assert hash64("user-1") != hash64("user-2")
    assert 0 <= hash64("x") < 2**64
    assert combine(None, 5) == 5 and combine(1, 0) == 2 and combine(2**63, 0) == 1


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_the_same_key_reaches_the_same_instance_in_every_picker(policy):
    eps = endpoints(*(instance(n) for n in range(10)))
    first, second = picker(policy, eps, seed=1), picker(policy, list(reversed(eps)), seed=2)
    assert owners(first) == owners(second)  # order and random source do not matter
    assert len(set(owners(first))) == 10


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_one_of_ten_leaving_moves_about_a_tenth_of_the_keys(policy):
    ten = endpoints(*(instance(n) for n in range(10)))
    before = owners(picker(policy, ten))
    leaving = "i4"
    after = owners(picker(policy, [e for e in ten if e.instance.id != leaving]))
    moved = [k for k, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    share = len(moved) / len(KEYS)
    print(f"\n{policy}: {share:.3f} of 10,000 keys moved when 1 of 10 instances left")
    assert 0.08 <= share <= 0.12, share
    owned = {k for k, owner in enumerate(before) if owner == leaving}
    assert owned <= set(moved)  # every key of the one that left moved...
    extra = len(set(moved) - owned) / len(KEYS)
    assert extra <= (0.0 if policy == "ring_hash" else 0.01), extra  # ...and few others


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_one_joining_takes_about_its_share_only(policy):
    ten = endpoints(*(instance(n) for n in range(10)))
    before = owners(picker(policy, ten))
    after = owners(picker(policy, [*ten, *endpoints(instance(10))]))
    moved = [k for k, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert all(after[k] == "i10" for k in moved) or policy == "maglev"
    assert 0.07 <= len(moved) / len(KEYS) <= 0.12


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_keys_spread_in_proportion_to_weight(policy):
    eps = endpoints(instance(1, weight_passing=3), instance(2, weight_passing=1))
    counts = Counter(owners(picker(policy, eps)))
    assert counts["i1"] / len(KEYS) == pytest.approx(0.75, abs=0.05), counts


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_a_retry_walks_on_to_an_instance_not_tried(policy):
    eps = endpoints(*(instance(n) for n in range(5)))
    p = picker(policy, eps)
    for key in KEYS[:300]:
        first = p.pick(hash_key=key).id
        second = p.pick({first}, hash_key=key).id
        assert second != first
        assert p.pick({first}, hash_key=key).id == second  # deterministic per key
        third = p.pick({first, second}, hash_key=key).id
        assert third not in (first, second)
    everything = {e.instance.id for e in eps}
    key = KEYS[0]
    assert p.pick(everything, hash_key=key).id == p.pick(hash_key=key).id


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_without_a_key_picks_are_random_by_weight(policy):
    eps = endpoints(instance(1, weight_passing=9), instance(2, weight_passing=1))
    p = picker(policy, eps, seed=4)
    counts = Counter(p.pick().id for _ in range(10_000))
    assert counts["i1"] / 10_000 == pytest.approx(0.9, abs=0.02)
    assert Counter(p.pick({"i1"}).id for _ in range(200)) == {"i2": 200}


def test_ring_size_follows_ring_hash_config():
    eps = endpoints(*(instance(n) for n in range(3)))
    small = RingHashPicker("svc", eps, random.Random(1), FakeClock(), minimum_ring_size=64)
    assert small.ring_size == 3 * 32  # points per instance: the power of two reaching 64
    with pytest.raises(ValueError, match="minimum <= maximum"):
        RingHashPicker(
            "svc", eps, random.Random(1), FakeClock(), minimum_ring_size=4096, maximum_ring_size=512
        )
    default = RingHashPicker("svc", eps, random.Random(1), FakeClock())
    assert default.ring_size == 3 * 512  # Consul's default minimum, 1024
    heavy = endpoints(instance(1, weight_passing=5000), instance(2, weight_passing=1))
    ring = RingHashPicker("svc", heavy, random.Random(1), FakeClock(), maximum_ring_size=2048)
    assert ring.ring_size <= 2048 + 1  # weights scaled down to the cap; the light one keeps 1
    assert {ring.pick(hash_key=k).id for k in KEYS} == {"i1", "i2"}


def test_maglev_table_needs_a_prime_and_fills_every_slot_by_weight():
    with pytest.raises(ValueError, match="prime"):
        build_maglev_table(("a", "b"), (1, 1), 1000)
    table = build_maglev_table(("a", "b", "c"), (2, 1, 0), 1031)
    counts = Counter(table)
    assert set(counts) == {0, 1} and sum(counts.values()) == 1031
    assert counts[0] / 1031 == pytest.approx(2 / 3, abs=0.01)
    small = MaglevPicker(
        "svc", endpoints(instance(1), instance(2)), random.Random(1), FakeClock(), table_size=251
    )
    assert {small.pick(hash_key=k).id for k in KEYS[:100]} == {"i1", "i2"}


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_zero_weight_owns_no_key_unless_all_are_zero(policy):
    eps = endpoints(instance(1, weight_passing=0, weight_warning=0), instance(2))
    assert set(owners(picker(policy, eps), KEYS[:500])) == {"i2"}
    zeros = endpoints(
        instance(1, weight_passing=0, weight_warning=0),
        instance(2, weight_passing=0, weight_warning=0),
    )
    assert set(owners(picker(policy, zeros), KEYS[:500])) == {"i1", "i2"}
