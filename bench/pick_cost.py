"""1. Pick cost: a cached pick per policy at 3, 100 and 1,000 instances, vs asking Consul.

Ours: ``Balancer.pick()`` over a Resolution already in memory (what every call does),
each pick timed alone with ``perf_counter_ns`` (the timer's own cost, ~0.1 µs, is
included). Naive: what a client without a cache does on every call, through py-consul:
``health.service(name, passing=True)`` on a real dev agent holding that many instances,
then ``random.choice``. Hash policies (``ring_hash``, ``maglev``) pick with a request's
hash key, as their calls do; and for them, the share of 10,000 keys that move to another
instance when one of 10 leaves (ideal: the tenth it owned, and no other).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from bench.env import consul_agent, register_instances
from bench.result import Chart, Result, at_least, at_most, summary
from consul_discovery.client import POLICIES, Balancer, Instance, Resolution, ServiceConfig
from consul_discovery.client.hashing import hash64

HASH_POLICIES = ("ring_hash", "maglev")
KEYS = [hash64(f"user-{n}") for n in range(10_000)]


@dataclass(frozen=True, slots=True)
class Params:
    """How many instances, picks and naive calls."""

    sizes: tuple[int, ...] = (3, 100, 1000)
    picks: int = 20_000  # timed picks per (policy, size)
    naive_calls: int = 200  # at most, per size
    naive_seconds: float = 8.0  # and at most this long per size


FULL = Params()
QUICK = Params(sizes=(3, 100), picks=500, naive_calls=10, naive_seconds=1.0)


def resolution(service: str, count: int) -> Resolution:
    """A Resolution of ``count`` made-up passing instances (no network involved)."""
    instances = tuple(
        Instance(f"{service}-{n}", service, f"10.0.{n // 250}.{n % 250 + 1}", 8080)
        for n in range(count)
    )
    return Resolution(service, instances, index=1, fetched_at=time.monotonic())


def time_picks(balancer: Balancer, picks: int) -> list[float]:
    """Seconds taken by each of ``picks`` consecutive picks (after a short warm-up); a hash
    policy's picks carry a request's hash key."""
    pick, clock = balancer.pick, time.perf_counter_ns
    key = KEYS[0] if balancer.config.policy in HASH_POLICIES else None
    for _ in range(min(1000, picks)):
        pick((), key)
    samples = [0] * picks
    for n in range(picks):
        t0 = clock()
        pick((), key)
        samples[n] = clock() - t0
    return [s / 1e9 for s in samples]


def time_naive(client, service: str, calls: int, seconds: float, rng: random.Random):
    """Seconds taken by each naive pick: ask Consul for the passing set, choose one."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < calls and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        _, entries = client.health.service(service, passing=True)
        rng.choice(entries)
        samples.append(time.perf_counter() - t0)
    return samples


def keys_moved(policy: str) -> float:
    """The share of ``KEYS`` whose instance changes when one of 10 instances leaves."""
    balancer = Balancer("moves", ServiceConfig(policy=policy), rng=random.Random(1))
    balancer.update(resolution("moves", 10))
    before = [balancer.pick((), key).instance.id for key in KEYS]
    ten = resolution("moves", 10)
    balancer.update(Resolution("moves", ten.instances[:4] + ten.instances[5:], index=2,
                               fetched_at=time.monotonic()))  # fmt: skip
    after = [balancer.pick((), key).instance.id for key in KEYS]
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(KEYS)


def run(p: Params) -> Result:
    """Measure ours and naive at each size; ratio = naive median / our slowest median."""
    rows: list[dict] = []
    ours_p99: dict[str, list[float]] = {policy: [] for policy in POLICIES}
    naive_p99: list[float] = []
    worst_p99, min_ratio = 0.0, float("inf")
    rng = random.Random(6)
    with consul_agent() as agent:
        client = agent.client()
        for size in p.sizes:
            service = f"pick-{size}"
            register_instances(agent, service, size)
            medians = []
            for policy in POLICIES:
                balancer = Balancer(service, ServiceConfig(policy=policy), rng=random.Random(1))
                balancer.update(resolution(service, size))
                s = summary(time_picks(balancer, p.picks), scale=1e6)
                rows.append(
                    {
                        "instances": size,
                        "policy": policy,
                        "p50_us": s["p50"],
                        "p99_us": s["p99"],
                        "n": s["n"],
                    }
                )
                ours_p99[policy].append(s["p99"])
                medians.append(s["p50"])
                worst_p99 = max(worst_p99, s["p99"])
            naive = summary(time_naive(client, service, p.naive_calls, p.naive_seconds, rng), 1e6)
            ratio = naive["p50"] / max(medians)
            min_ratio = min(min_ratio, ratio)
            naive_p99.append(naive["p99"])
            rows.append(
                {
                    "instances": size,
                    "policy": "naive: py-consul per call",
                    "p50_us": naive["p50"],
                    "p99_us": naive["p99"],
                    "n": naive["n"],
                    "naive/ours p50": ratio,
                }
            )
    moved = {policy: keys_moved(policy) for policy in HASH_POLICIES}
    for policy, share in moved.items():
        rows.append({"instances": 10, "policy": f"{policy}: keys moved, 1 of 10 leaves",
                     "moved": share})  # fmt: skip
    labels = tuple(str(size) for size in p.sizes)
    return Result(
        name="pick_cost",
        title="Pick cost (µs per pick)",
        rows=rows,
        checks=[
            at_most("p99 pick, worst policy and size", worst_p99, 10, " µs"),
            at_least(
                "naive/ours p50, smallest over sizes",
                min_ratio,
                100,
                "×",
                "ours = the slowest policy's median at that size",
            ),
            at_most(
                "hash policies: keys moved when 1 of 10 leaves, farthest from 1/10",
                max(abs(share - 0.1) for share in moved.values()),
                0.02,
                "",
                "10,000 keys; the leaving instance owned about a tenth",
            ),
        ],
        charts=[
            Chart(
                "p99 pick latency by instance count",
                "µs (log)",
                labels,
                {**ours_p99, "naive (py-consul)": naive_p99},
                log=True,
            )
        ],
    )
