"""3. Client-side vs proxy: the same open-loop load over 3 instances, direct or via HAProxy.

ServiceClient (round_robin, and the default least_request) calls the instances
directly; the proxy path is a keep-alive Session to HAProxy (``balance roundrobin``),
which discovers the same instances from Consul DNS SRV records (bench/haproxy.cfg.template).
Backends have a small fixed delay. The paths alternate over rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import calls
from bench.env import consul_agent, start_backends
from bench.haproxy import run_haproxy
from bench.loadgen import run_open_loop
from bench.result import Chart, Result, at_most, summary
from consul_discovery.client import ServiceClient, ServiceConfig

SERVICE = "proxied"
TIMEOUT = (1.0, 5.0)


@dataclass(frozen=True, slots=True)
class Params:
    """Load shape and backend delay."""

    rounds: int = 2
    rate: float = 200.0
    seconds: float = 6.0
    delay: float = 0.005


FULL = Params()
QUICK = Params(rounds=1, rate=50.0, seconds=0.5)


def run(p: Params) -> Result:
    """Run each path ``rounds`` times, alternating; pool each path's latencies."""
    names = ("ServiceClient round_robin", "ServiceClient least_request", "HAProxy roundrobin")
    latencies: dict[str, list[float]] = {name: [] for name in names}
    failures = dict.fromkeys(names, 0)
    with consul_agent() as agent, start_backends(agent, SERVICE, 3, delay=p.delay) as backends:
        ids = {b.id for b in backends}
        rr = ServiceClient(
            agent.address, services={SERVICE: ServiceConfig("round_robin")}, timeout=TIMEOUT
        )
        lr = ServiceClient(
            agent.address, services={SERVICE: ServiceConfig("least_request")}, timeout=TIMEOUT
        )
        with rr, lr, run_haproxy(agent.ports.dns, SERVICE, ids) as url, calls.session() as s:
            paths = {
                names[0]: calls.via_client(rr, SERVICE),
                names[1]: calls.via_client(lr, SERVICE),
                names[2]: calls.via_url(s, url, TIMEOUT),
            }
            for call in paths.values():
                for seq in range(30):
                    call(seq)
            for n in range(p.rounds):
                for name in names if n % 2 == 0 else reversed(names):
                    report = run_open_loop(paths[name], p.rate, p.seconds)
                    latencies[name] += [o.latency for o in report.outcomes if o.ok]
                    failures[name] += len(report.failures)
    stats = {name: summary(values, scale=1e3) for name, values in latencies.items()}
    rows = [
        {
            "path": name,
            "p50_ms": s["p50"],
            "p99_ms": s["p99"],
            "p999_ms": s["p999"],
            "n": s["n"],
            "failed": failures[name],
        }
        for name, s in stats.items()
    ]
    ours, proxy = stats[names[0]], stats[names[2]]
    return Result(
        name="proxy_compare",
        title=f"Client-side vs HAProxy: 3 instances, {p.rate:g} req/s, delay {p.delay * 1e3:g} ms",
        rows=rows,
        checks=[
            at_most("p50 ServiceClient rr / HAProxy", ours["p50"] / proxy["p50"], 1.0, "×"),
            at_most("p99 ServiceClient rr / HAProxy", ours["p99"] / proxy["p99"], 1.1, "×"),
        ],
        charts=[
            Chart(
                "Latency by path (open loop)",
                "ms",
                ("p50", "p99", "p99.9"),
                {k: [s["p50"], s["p99"], s["p999"]] for k, s in stats.items()},
            )
        ],
        params={"backend_delay_s": p.delay},
    )
