"""6. Scale: 10 services × 100 instances watched by one client.

Catalog-only instances with passing TTL checks are registered on a dev agent; one
ServiceClient (its ConsulSource with a shorter blocking ``wait`` so idle periods fit in
the run) resolves all services. Measured: the client's memory (tracemalloc of Python
allocations while resolving, and RSS growth), Consul requests per watched service per
wait period while nothing changes (the watch's own request counter), the time from a TTL
check flip to the new set being applied (a listener after the Balancer), and the
in-process cost of ``Balancer.update`` with a 100-instance set.
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from dataclasses import dataclass

from bench.env import consul_agent, register_instances, rss_bytes
from bench.pick_cost import resolution
from bench.propagation import SetRecorder, timed
from bench.result import Chart, Result, at_most, summary
from consul_discovery.client import Balancer, ConsulSource, ServiceClient


@dataclass(frozen=True, slots=True)
class Params:
    """Catalog size, blocking wait, idle periods observed and updates timed."""

    services: int = 10
    per_service: int = 100
    wait: float = 10.0
    idle_periods: int = 3
    updates: int = 20
    gap: tuple[float, float] = (0.1, 0.3)  # between flips: keeps them apart, as real ones are


FULL = Params()
QUICK = Params(services=2, per_service=10, wait=1.0, idle_periods=1, updates=2, gap=(0.06, 0.1))


def update_cost(size: int, rounds: int = 200) -> list[float]:
    """Seconds per ``Balancer.update`` with a fresh ``size``-instance Resolution."""
    balancer = Balancer("cost")
    samples = []
    for _ in range(rounds):
        res = resolution("cost", size)
        t0 = time.perf_counter()
        balancer.update(res)
        samples.append(time.perf_counter() - t0)
    return samples


def run(p: Params) -> Result:
    """Register, resolve everything (memory), sit idle (requests), flip checks (updates)."""
    rng = random.Random(7)
    names = [f"scale-{n}" for n in range(p.services)]
    with consul_agent() as agent:
        ids = {
            name: register_instances(agent, name, p.per_service, ttl_check=True) for name in names
        }
        gc.collect()
        rss0 = rss_bytes()
        tracemalloc.start()
        source = ConsulSource(agent.address, wait=p.wait)
        client = ServiceClient(source=source)
        try:
            for name in names:
                client.balancer(name)
            traced, _peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            gc.collect()
            rss1 = rss_bytes()
            time.sleep(0.5)  # every watch is now parked in its first blocking query
            before = {name: source.watch_stats(name).requests for name in names}
            time.sleep(p.idle_periods * p.wait)  # the measurement: nothing changes
            after = {name: source.watch_stats(name).requests for name in names}
            idle = [(after[n] - before[n]) / p.idle_periods for n in names]
            recorders = {name: SetRecorder() for name in names}
            for name in names:
                source.subscribe(name, recorders[name])
            checks = agent.client().agent.check
            applied = []
            for _ in range(p.updates):
                name = rng.choice(names)
                sid = rng.choice(ids[name])
                rec, cid = recorders[name], f"service:{sid}"
                applied.append(
                    timed(
                        rec, lambda c=cid: checks.ttl_fail(c), lambda s, sid=sid: sid not in s, 10.0
                    )
                )
                time.sleep(rng.uniform(*p.gap))
                applied.append(
                    timed(rec, lambda c=cid: checks.ttl_pass(c), lambda s, sid=sid: sid in s, 10.0)
                )
                time.sleep(rng.uniform(*p.gap))
            reads = []
            for _ in range(20):
                t0 = time.perf_counter()
                agent.client().health.service(names[0])
                reads.append(time.perf_counter() - t0)
        finally:
            tracemalloc.stop()
            client.close()
            source.close()
    cost = summary(update_cost(p.per_service), scale=1e3)
    upd = summary(applied, scale=1e3)
    total = p.services * p.per_service
    rows = [
        {"metric": f"instances watched ({p.services} services)", "value": total, "unit": ""},
        {"metric": "client memory, Python allocations", "value": traced / 2**20, "unit": "MiB"},
        {"metric": "client memory, RSS growth", "value": (rss1 - rss0) / 2**20, "unit": "MiB"},
        {
            "metric": f"idle requests/service per {p.wait:g} s wait, max",
            "value": max(idle),
            "unit": "req",
        },
        {
            "metric": "idle requests/service per wait, mean",
            "value": sum(idle) / len(idle),
            "unit": "req",
        },
        {"metric": "check flip → set applied, p50", "value": upd["p50"], "unit": "ms"},
        {"metric": "check flip → set applied, p99", "value": upd["p99"], "unit": "ms"},
        {
            "metric": f"one health read of {p.per_service} instances (py-consul), p50",
            "value": summary(reads, scale=1e3)["p50"],
            "unit": "ms",
        },
        {
            "metric": f"Balancer.update({p.per_service} instances), p50",
            "value": cost["p50"],
            "unit": "ms",
        },
        {
            "metric": f"Balancer.update({p.per_service} instances), p99",
            "value": cost["p99"],
            "unit": "ms",
        },
    ]
    return Result(
        name="scale",
        title=f"Scale: {p.services} services × {p.per_service} instances, one client",
        rows=rows,
        checks=[
            at_most("idle requests per service per wait period", max(idle), 1.0),
            at_most("update applied p99 (check flip → new set)", upd["p99"], 50, " ms"),
        ],
        charts=[
            Chart(
                "Check flip → new set applied (CDF)",
                "ms",
                (),
                {"update applied": [v * 1e3 for v in applied]},
                kind="cdf",
            )
        ],
        params={"updates_timed": len(applied)},
    )
