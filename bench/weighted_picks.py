"""8. Weighted picks: the share of calls each policy sends to a warning instance.

Three gunicorn backends registered through Consul's HTTP API with Weights Passing 10 /
Warning 1 and TTL checks: one passing, one warning, one critical. Sequential calls per
policy through a ServiceClient; the warning instance's share should be about its weight
ratio, 1/11 (peak_ewma, whose cost is divided by the weight: at most 1/11),
and the critical one is never called.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import requests

from bench.env import consul_agent
from bench.result import Chart, Result, at_most
from consul_discovery.client import ServiceClient, ServiceConfig
from consul_discovery.client.config import POLICIES
from tests.harness.backends import Backend, wait_until_passing
from tests.harness.ports import free_port

SERVICE = "weighted"
TARGET = 1 / 11


@dataclass(frozen=True, slots=True)
class Params:
    """Calls per policy."""

    calls: int = 2000


FULL = Params()
QUICK = Params(calls=200)


def run(p: Params) -> Result:
    """Every policy in turn over the same three instances."""
    backends = [Backend(id=f"{SERVICE}-{h}", service=SERVICE, port=free_port())
                for h in ("passing", "warning", "critical")]  # fmt: skip
    rows = []
    try:
        with consul_agent() as agent:
            for backend in backends:
                backend.start()
            for backend, health in zip(backends, ("passing", "warning", "critical"), strict=True):
                backend.wait_ready()
                body = {
                    "ID": backend.id, "Name": SERVICE, "Address": "127.0.0.1",
                    "Port": backend.port, "Weights": {"Passing": 10, "Warning": 1},
                    "Check": {"CheckID": f"service:{backend.id}", "TTL": "1h", "Status": health},
                }  # fmt: skip
                url = f"{agent.url}/v1/agent/service/register"
                requests.put(url, json=body, timeout=5).raise_for_status()
            wait_until_passing(agent.client(), SERVICE, 1)
            health_of = {b.port: b.id.rsplit("-", 1)[1] for b in backends}
            for policy in POLICIES:
                config = ServiceConfig(policy=policy)
                counts: Counter[str] = Counter()
                with ServiceClient(agent.address, default_config=config) as client:
                    for _ in range(p.calls):
                        response = client.get(SERVICE, "/")
                        port = int(response.url.split("//", 1)[1].split("/", 1)[0].rsplit(":")[1])
                        counts[health_of[port]] += 1
                rows.append({
                    "policy": policy,
                    "warning_share": counts["warning"] / p.calls,
                    "critical_calls": counts["critical"],
                    "calls": p.calls,
                })  # fmt: skip
    finally:
        for backend in backends:
            backend.stop()
    plain = [r for r in rows if r["policy"] != "peak_ewma"]
    worst = max(abs(r["warning_share"] - TARGET) for r in plain)
    # 3.5 binomial standard deviations of the share at this many calls
    tolerance = round(3.5 * math.sqrt(TARGET * (1 - TARGET) / p.calls), 3)
    peak = next(r["warning_share"] for r in rows if r["policy"] == "peak_ewma")
    return Result(
        name="weighted_picks",
        title="Share of calls to a warning instance (weights Passing 10 / Warning 1)",
        rows=rows,
        checks=[
            at_most(
                "critical instance calls, all policies", sum(r["critical_calls"] for r in rows), 0
            ),
            at_most("|warning share - 1/11|, worst non-EWMA policy", worst, tolerance),
            at_most("peak_ewma warning share (cost / weight: at most w = 1/11)", peak, TARGET),
        ],
        charts=[
            Chart(
                title="Warning instance's share of calls per policy (target 1/11)",
                ylabel="share",
                labels=tuple(r["policy"] for r in rows),
                series={
                    "warning share": [r["warning_share"] for r in rows],
                    "weight ratio": [TARGET] * len(rows),
                },
            )
        ],
    )
