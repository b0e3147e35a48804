"""4. Slow instance (after Linkerd's "Beyond Round Robin"): one of 3 turns 10× slower.

For each policy (ServiceClient round_robin, random, least_request, peak_ewma; HAProxy
roundrobin) a fresh open-loop run at a fixed rate; during its middle third one instance's
delay goes from ``delay`` to ``slow_factor × delay``. Reported over the whole run:
p50/p99/p99.9, success rate under a timeout of 5× the normal median (applied after the
fact to each request's latency, the same for every path, so no client retries or
ejections interfere), and the share of the slow window's requests served by the slow
instance. The normal median comes from a calibration run with nothing slow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bench import calls
from bench.env import consul_agent
from bench.haproxy import run_haproxy
from bench.loadgen import LoadReport, run_open_loop
from bench.result import Chart, Result, at_most, percentile, summary
from discovery_client import ServiceClient, ServiceConfig
from tests.harness.backends import Backend, start_backends

SERVICE = "slowpoke"
POLICIES = ("round_robin", "random", "least_request", "peak_ewma")
HAPROXY = "HAProxy roundrobin"
TIMEOUT = (1.0, 10.0)


@dataclass(frozen=True, slots=True)
class Params:
    """Load shape, normal delay and slow-down factor."""

    rate: float = 100.0
    seconds: float = 15.0
    delay: float = 0.010
    slow_factor: float = 10.0
    calibrate_seconds: float = 3.0


FULL = Params()
QUICK = Params(rate=40.0, seconds=1.5, calibrate_seconds=0.5)


def with_slowdown(p: Params, slow: Backend, call: calls.LoadCall) -> LoadReport:
    """One run of ``call`` with ``slow`` slowed down for the middle third; delay restored."""
    on = threading.Timer(p.seconds / 3, slow.control, kwargs={"delay": p.delay * p.slow_factor})
    off = threading.Timer(2 * p.seconds / 3, slow.control, kwargs={"delay": p.delay})
    on.start()
    off.start()
    try:
        return run_open_loop(call, p.rate, p.seconds, max_workers=128)
    finally:
        on.cancel()
        off.cancel()
        on.join()
        off.join()
        slow.control(delay=p.delay)


def figures(report: LoadReport, p: Params, timeout: float, slow_id: str) -> dict[str, float]:
    """Latency percentiles, success under ``timeout`` and the slow instance's share."""
    s = summary([o.latency for o in report.outcomes if o.ok], scale=1e3)
    good = sum(1 for o in report.outcomes if o.ok and o.latency <= timeout)
    window = [o for o in report.outcomes if p.seconds / 3 <= o.intended < 2 * p.seconds / 3]
    to_slow = sum(1 for o in window if o.detail == slow_id)
    return {
        "p50_ms": s["p50"],
        "p99_ms": s["p99"],
        "p999_ms": s["p999"],
        "n": s["n"],
        "success": good / max(1, len(report.outcomes)),
        "slow_share": to_slow / max(1, len(window)),
    }


def run(p: Params) -> Result:
    """Calibrate, then one slowed-down run per policy and one through HAProxy."""
    results: dict[str, dict[str, float]] = {}
    with consul_agent() as agent, start_backends(agent, SERVICE, 3, delay=p.delay) as backends:
        slow = backends[0]
        for policy in POLICIES:
            config = {SERVICE: ServiceConfig(policy)}
            with ServiceClient(agent.address, services=config, timeout=TIMEOUT) as client:
                call = calls.via_client(client, SERVICE)
                if policy == POLICIES[0]:
                    calib = run_open_loop(call, p.rate, p.calibrate_seconds)
                    normal = percentile([o.latency for o in calib.outcomes if o.ok], 50)
                    timeout = 5 * normal
                results[policy] = figures(with_slowdown(p, slow, call), p, timeout, slow.id)
        ids = {b.id for b in backends}
        with run_haproxy(agent.ports.dns, SERVICE, ids) as url, calls.session() as s:
            report = with_slowdown(p, slow, calls.via_url(s, url, TIMEOUT))
            results[HAPROXY] = figures(report, p, timeout, slow.id)
    rows = [{"policy": name, **f} for name, f in results.items()]
    rr, ewma = results["round_robin"], results["peak_ewma"]
    return Result(
        name="slow_instance",
        title=(
            f"Slow instance: 3 instances, {p.rate:g} req/s, one {p.slow_factor:g}× slower for "
            f"the middle third; timeout {timeout * 1e3:.1f} ms = 5× normal p50"
        ),
        rows=rows,
        checks=[
            at_most("peak_ewma p99 / round_robin p99", ewma["p99_ms"] / rr["p99_ms"], 0.3, "×"),
            at_most("peak_ewma share to the slow instance", ewma["slow_share"], 0.10),
        ],
        charts=[
            Chart(
                "Latency percentiles by policy",
                "ms (log)",
                ("p50", "p99", "p99.9"),
                {k: [f["p50_ms"], f["p99_ms"], f["p999_ms"]] for k, f in results.items()},
                log=True,
            ),
            Chart(
                "Share of slow-window traffic sent to the slow instance",
                "share",
                ("slow share",),
                {k: [f["slow_share"]] for k, f in results.items()},
            ),
        ],
        params={"normal_p50_ms": normal * 1e3, "timeout_ms": timeout * 1e3},
    )
