"""7. Failure drills on the secure cluster (ACLs, TLS, 3 servers, 2 client agents).

One secure cluster (tests/harness/secure_cluster.py: gateway + 2 user-service + 2
order-service instances spread over two client agents); open-loop load through the
gateway (half POSTs with an Idempotency-Key, half GETs) while, in turn: the Raft leader
is killed -9 (then a registration must go through), a client agent restarts, an
instance is killed -9, and order-service gets a rolling restart. Per drill: requests,
failures, duplicate orders, p99 latency, and the drill's own figure. Also reported: the
time from a clean run dir to every instance passing. Every wait for a stop (the killed
leader held down, the cluster's stop at the end) allows what the programs' own stop
settings give (``services.cluster.stopping``), not a constant.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.result import Chart, Result, at_most
from services.cluster import control, stopping
from tests.harness import drills, secure_cluster


@dataclass(frozen=True, slots=True)
class Params:
    """Load rate and length of each drill."""

    rate: float = 18.0
    seconds: float = 20.0


FULL = Params()
QUICK = Params(rate=6.0, seconds=3.0)


def run(p: Params) -> Result:
    """Start the secure cluster, run the four drills in turn, stop it."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-secure-") as tmp:
        started = time.monotonic()
        # In the mesh, the profile's default (make run-cluster PROFILE=secure).
        with secure_cluster.running_secure_cluster(Path(tmp), mesh=True) as plan:
            startup = time.monotonic() - started
            # What every wait for a stop allows: from the programs' own stop settings.
            stop_bound = stopping.parallel_stop_bound(plan, [i.program for i in plan.instances()])
            load = drills.GatewayLoad(plan)
            faults = {
                "kill -9 Raft leader": lambda: drills.kill_leader(plan),
                "restart client agent": lambda: drills.restart_client_agent(plan, 1),
                "kill -9 instance": lambda: drills.kill_instance(
                    plan, plan.instances_of("order-service")[0].program
                ),
                "rolling restart": lambda: drills.rolling_restart(plan, "order-service"),
            }
            for name, fault in faults.items():
                after = min(3.0, p.seconds / 3)
                result = drills.run_drill(load, name, fault, p.rate, p.seconds, after)
                control.wait_passing(plan, plan.instances(), 60)
                rows.append(
                    {
                        "drill": name,
                        "requests": result.requests,
                        "failed": len(result.failures),
                        "duplicates": result.duplicates,
                        "p99_ms": result.p99_ms,
                        **{k: round(v, 2) for k, v in result.figures.items()},
                    }
                )
    failed = sum(r["failed"] + r["duplicates"] for r in rows)
    return Result(
        name="secure_drills",
        title="Failure drills on the secure cluster, open-loop load through the gateway",
        rows=rows,
        checks=[
            at_most("failed requests + duplicate orders, all drills", failed, 0),
            at_most("clean run dir → all instances passing", startup, 60, " s"),
        ],
        charts=[
            Chart(
                "p99 latency during each drill",
                "ms",
                tuple(r["drill"] for r in rows),
                {"p99": [r["p99_ms"] for r in rows]},
            )
        ],
        params={"startup_s": round(startup, 1), "instances_stop_bound_s": stop_bound},
    )
