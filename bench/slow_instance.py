"""4. Slow instance (after Linkerd's "Beyond Round Robin"): one of 3 turns 10× slower.

For each policy (ServiceClient round_robin, random, least_request, peak_ewma; HAProxy
roundrobin; httpx.AsyncClient through AsyncDiscoveryTransport with round_robin and
peak_ewma, driven by the asyncio open loop) fresh open-loop runs at a fixed rate; during
the middle third of each run one instance's delay goes from ``delay`` to ``slow_factor ×
delay``: the instance that served the most calls until then (a load-aware policy may have
stopped calling a fixed one before the switch). Reported, pooled over ``repeats`` runs per
path: p50/p99/p99.9, p99 of the slow third alone, success rate under a timeout of 5× the
normal median (applied after the fact to each request's latency, the same for every path,
so no client retries or ejections interfere), and the share of the slow third's requests
served by the slow instance. The normal median comes from a calibration run with nothing
slow.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bench import calls
from bench.env import consul_agent, start_backends
from bench.haproxy import run_haproxy
from bench.loadgen import LoadReport, Outcome, run_open_loop, run_open_loop_async
from bench.result import Chart, Result, at_most, percentile, summary
from consul_discovery.client import ServiceClient, ServiceConfig
from consul_discovery.client.httpx_transport import AsyncDiscoveryTransport
from tests.harness.backends import Backend, SlowDown

SERVICE = "slowpoke"
POLICIES = ("round_robin", "random", "least_request", "peak_ewma")
HAPROXY = "HAProxy roundrobin"
ASYNC = ("async round_robin", "async peak_ewma")  # httpx.AsyncClient + the async transport
TIMEOUT = (1.0, 10.0)


@dataclass(frozen=True, slots=True)
class Params:
    """Load shape, normal delay and slow-down factor."""

    rate: float = 100.0
    seconds: float = 15.0
    delay: float = 0.010
    slow_factor: float = 10.0
    calibrate_seconds: float = 3.0
    repeats: int = 2  # runs per path, pooled


FULL = Params()
QUICK = Params(rate=40.0, seconds=1.2, calibrate_seconds=0.5, repeats=1)


def with_slowdown(
    p: Params, backends: list[Backend], load: Callable[[], LoadReport]
) -> tuple[LoadReport, str]:
    """One ``load`` run with its busiest backend at the switch slowed down for the middle
    third (a fixed one may get no call then: SlowDown says why); the run and that
    backend's id. Every delay is restored."""
    slowdown = SlowDown(backends, p.delay * p.slow_factor)

    def restore() -> None:
        for backend in backends:
            backend.control(delay=p.delay)

    on = threading.Timer(p.seconds / 3, slowdown.switch)
    off = threading.Timer(2 * p.seconds / 3, restore)
    on.start()
    off.start()
    try:
        report = load()
    finally:
        on.cancel()
        off.cancel()
        on.join()
        off.join()
        restore()
    if slowdown.backend is None:
        raise RuntimeError("slow_instance: the slow-down did not happen (see the log above)")
    return report, slowdown.backend.id


def threaded(p: Params, call: calls.LoadCall) -> Callable[[], LoadReport]:
    """An open-loop run of a blocking ``call`` on a thread pool."""
    return lambda: run_open_loop(call, p.rate, p.seconds, max_workers=128)


async def via_async(p: Params, address: str, name: str) -> LoadReport:
    """An open-loop run through httpx.AsyncClient + AsyncDiscoveryTransport (fresh)."""
    policy = name.removeprefix("async ")
    transport = AsyncDiscoveryTransport(address, services={SERVICE: ServiceConfig(policy)})
    timeout = httpx.Timeout(TIMEOUT[1], connect=TIMEOUT[0])
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:

        async def call(_seq: int) -> tuple[bool, str]:
            response = await http.get(f"http://{SERVICE}/")
            if response.status_code != 200:
                return False, f"HTTP {response.status_code}"
            return True, str(response.json()["instance"])

        return await run_open_loop_async(call, p.rate, p.seconds)


def figures(runs: list[tuple[LoadReport, str]], p: Params, timeout: float) -> dict[str, float]:
    """Pooled over ``runs`` (each with its slowed-down backend's id): percentiles, success
    under ``timeout``, the slow share."""
    outcomes = [o for r, _ in runs for o in r.outcomes]
    s = summary([o.latency for o in outcomes if o.ok], scale=1e3)
    good = sum(1 for o in outcomes if o.ok and o.latency <= timeout)
    windows = [(slow_window(r, p), slow_id) for r, slow_id in runs]
    in_window = sum(len(w) for w, _ in windows)
    to_slow = sum(1 for w, slow_id in windows for o in w if o.detail == slow_id)
    return {
        "p50_ms": s["p50"],
        "p99_ms": s["p99"],
        "p999_ms": s["p999"],
        "slow_window_p99_ms": percentile([o.latency for w, _ in windows for o in w if o.ok], 99)
        * 1e3,
        "n": s["n"],
        "success": good / max(1, len(outcomes)),
        "slow_share": to_slow / max(1, in_window),
        "share_per_run": " ".join(f"{share(w, slow_id):.3f}" for w, slow_id in windows),
    }


def slow_window(report: LoadReport, p: Params) -> list[Outcome]:
    """One run's outcomes sent during its slow third."""
    return [o for o in report.outcomes if p.seconds / 3 <= o.intended < 2 * p.seconds / 3]


def share(window: list[Outcome], slow_id: str) -> float:
    """The slow backend's share of one run's slow-third requests."""
    return sum(1 for o in window if o.detail == slow_id) / max(1, len(window))


def run(p: Params) -> Result:
    """Calibrate; then ``repeats`` rounds of one slowed-down run per path, order alternating.

    Every ServiceClient run uses a fresh client (no latency history carried over).
    """
    names = (*POLICIES, HAPROXY, *ASYNC)
    reports: dict[str, list[tuple[LoadReport, str]]] = {name: [] for name in names}
    with consul_agent() as agent, start_backends(agent, SERVICE, 3, delay=p.delay) as backends:
        with ServiceClient(agent.address, timeout=TIMEOUT) as client:
            calib = run_open_loop(calls.via_client(client, SERVICE), p.rate, p.calibrate_seconds)
        normal = percentile([o.latency for o in calib.outcomes if o.ok], 50)
        timeout = 5 * normal
        ids = {b.id for b in backends}
        with run_haproxy(agent.ports.dns, SERVICE, ids) as url, calls.session() as s:
            for n in range(p.repeats):
                for name in names if n % 2 == 0 else reversed(names):
                    if name == HAPROXY:
                        call = calls.via_url(s, url, TIMEOUT)
                        reports[name].append(with_slowdown(p, backends, threaded(p, call)))
                        continue
                    if name in ASYNC:
                        load = functools.partial(asyncio.run, via_async(p, agent.address, name))
                        reports[name].append(with_slowdown(p, backends, load))
                        continue
                    config = {SERVICE: ServiceConfig(name)}
                    with ServiceClient(agent.address, services=config, timeout=TIMEOUT) as c:
                        call = calls.via_client(c, SERVICE)
                        reports[name].append(with_slowdown(p, backends, threaded(p, call)))
    results = {name: figures(reports[name], p, timeout) for name in names}
    rows = [{"policy": name, **f} for name, f in results.items()]
    rr, ewma = results["round_robin"], results["peak_ewma"]
    arr, aewma = results[ASYNC[0]], results[ASYNC[1]]
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
            at_most(
                "async transport: peak_ewma p99 / round_robin p99",
                aewma["p99_ms"] / arr["p99_ms"],
                0.3,
                "×",
            ),
            at_most(
                "async transport: peak_ewma share to the slow instance", aewma["slow_share"], 0.10
            ),
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
