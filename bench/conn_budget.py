"""Connection budget: processes × workers × watched services against one agent's limit.

Consul accepts at most ``http_max_conns_per_client`` (default 200) concurrent TCP
connections from one client IP to its HTTP(S) API and answers the next one with a raw
``429 Too Many Requests`` and a close (hashicorp/go-connlimit, counted per TCP
connection, shared by the HTTP and HTTPS listeners). Every process of a host reaches
its local agent from the same address, so they share that budget.

Each row starts N applications (``bench/budget_host.py``: a master that forks W worker
processes, as gunicorn does; S watched services each) against a dev agent with the
default limit and an HTTPS listener, lets them resolve, then measures:

- agent-side established connections (``ss`` on the agent's HTTP and HTTPS ports,
  the most seen while the watches sit in their long polls);
- what callers get: first resolves that failed and why, watch requests that failed
  (and of those, answered 429), warnings logged, stale sets;
- propagation: TTL check flips of random instances, from just before the agent API call
  to each worker receiving the new set (p50/p99 over every worker × flip), the share of
  those deliveries that arrived at all within the flip timeout, Consul's own part (a
  raw long poll from another address) and the application's (until its master's watch
  had it, before the relay hop).

Modes: ``per_worker_http1`` is the design before issue 19 part 2 (every worker its own
watches); ``relay_h2`` is the library's default now (the master watches once for its
workers over one HTTP/2 connection, the relay hands each set to them); ``relay_http1``
the same over plain HTTP (one connection per watched service and application).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.budget_env import OPERATOR_IP, Host, agent_call, established, raw_poll, stand_ins
from bench.env import sigint_deferred
from bench.result import Chart, Result, at_least, at_most, summary
from tests.harness.tls_agent import TlsDevAgent


@dataclass(frozen=True, slots=True)
class Params:
    """Host shapes to run (mode, processes, workers, services), flips and waits."""

    shapes: tuple[tuple[str, int, int, int], ...] = (
        ("per_worker_http1", 5, 4, 10),  # the old design at the budget: heartbeats refused
        ("relay_h2", 1, 4, 10),  # propagation for one application
        ("relay_h2", 50, 4, 10),  # the target host
    )
    instances: int = 3  # per service
    flips: int = 4
    flip_timeout: float = 6.0  # > the watch's 5 s backoff cap: a backed-off watch still counts
    settle: float = 3.0
    wait: float = 30.0
    limit: int | None = None  # None: Consul's default (read back from the agent)
    resolve_timeout: float = 20.0  # a worker's first resolves (over budget: how long they try)
    target: tuple[int, int, int] = (50, 4, 10)


FULL = Params()
QUICK = Params(
    shapes=(("per_worker_http1", 2, 2, 3), ("relay_h2", 2, 2, 3)),
    flips=1,
    flip_timeout=3.0,
    settle=0.5,
    limit=9,  # the old 2×2×3 (12 watches) is over it, the same host with relay_h2 is not
    resolve_timeout=3.0,
    target=(2, 2, 3),
)


def flip_delays(agent, host: Host, names, ids, observers: int, p: Params, rng):
    """Flip random instances critical and back: seconds to each worker's new set, to each
    application's own watch (before the relay hop), and Consul's own part (a raw long
    poll beside them)."""
    delays: list[float] = []
    to_process: list[float] = []
    to_agent: list[float] = []
    for _ in range(p.flips):
        service = rng.choice(names)
        victim = rng.choice(ids[service])
        for action, wanted in (("fail", False), ("pass", True)):
            answered: list[float] = []
            poll = raw_poll(agent, service, answered)
            with host.cond:
                mark, process_mark = len(host.seen), len(host.process)
            t0 = time.monotonic()
            status = agent_call(
                agent, "PUT", f"/v1/agent/check/{action}/service:{victim}", OPERATOR_IP
            )
            if status != 200:
                raise RuntimeError(f"check {action} of {victim}: HTTP {status}")
            first: dict[tuple[int, int], float] = {}

            def done(mark=mark, service=service, victim=victim, wanted=wanted, first=first):
                for proc, worker, svc, t, members in host.seen[mark:]:
                    if svc == service and (victim in members) == wanted:
                        first.setdefault((proc, worker), t)
                return len(first) >= observers

            with host.cond:
                host.cond.wait_for(done, timeout=p.flip_timeout)
                applications: dict[int, float] = {}
                for proc, svc, t, members in host.process[process_mark:]:
                    if svc == service and (victim in members) == wanted:
                        applications.setdefault(proc, t)
            delays += [t - t0 for t in first.values()]
            delays += [float("inf")] * (observers - len(first))
            to_process += [t - t0 for t in applications.values()]
            poll.join(p.flip_timeout)
            to_agent += [t - t0 for t in answered]
            time.sleep(rng.uniform(0.2, 0.3))
    return delays, to_process, to_agent


def run_shape(agent: TlsDevAgent, shape, names, ids, p: Params, rng) -> dict[str, Any]:
    """One row: start the applications, let them settle, count, flip, collect."""
    mode, n, workers, services = shape
    watched = names[:services]
    started = time.monotonic()
    with stand_ins(agent, mode, n, workers, watched, p.wait, p.resolve_timeout) as host:
        with host.cond:
            host.cond.wait_for(lambda: len(host.ready) >= n * workers, timeout=180)
        ready_s = time.monotonic() - started
        deadline = time.monotonic() + p.settle
        conns = 0
        while time.monotonic() < deadline:
            conns = max(conns, established(agent.ports.http, agent.https_port))
            time.sleep(0.25)
        # What the host's registrars would get now: a TTL heartbeat from 127.0.0.1.
        heartbeat = agent_call(agent, "PUT", "/v1/agent/check/pass/service:budget-0-0", "127.0.0.1")
        delays, to_process, to_agent = flip_delays(agent, host, watched, ids, n * workers, p, rng)
    outcomes: dict[str, int] = {}
    for r in host.ready:
        for kind, count in r["ready"].items():
            outcomes[kind] = outcomes.get(kind, 0) + count
    final = host.final
    arrived = [d for d in delays if d != float("inf")]
    s = summary(arrived, scale=1e3)
    failed = sum(v for k, v in outcomes.items() if k != "ok")
    return {
        "mode": mode,
        "host": f"{n}×{workers}×{services}",
        "watches": n * workers * services if mode.startswith("per_worker") else n * services,
        "agent_conns": conns,
        "ready_s": ready_s,
        "first_resolve_failed": failed,
        "relayed_workers": sum(1 for r in host.ready if r.get("relayed")),
        "host_heartbeat": heartbeat,
        "watch_errors": sum(f["errors"] for f in final),
        "rate_limited": sum(f.get("rate_limited", 0) for f in final),
        "warnings": sum(f["logs"].get("WARNING", 0) for f in final),
        "stale_sets": sum(f["stale_sets"] for f in final),
        "seen_share": len(arrived) / len(delays) if delays else float("nan"),
        "p50_ms": s["p50"],
        "p99_ms": s["p99"],
        "agent_p50_ms": summary(to_agent, scale=1e3)["p50"],
        "agent_p99_ms": summary(to_agent, scale=1e3)["p99"],
        "process_p50_ms": summary(to_process, scale=1e3)["p50"],
        "process_p99_ms": summary(to_process, scale=1e3)["p99"],
        "_why": sorted(k for k in outcomes if k != "ok")[:2],
        "_delays": arrived,
    }


def run(p: Params) -> Result:
    """Every shape against one agent with the default per-client connection limit."""
    rng = random.Random(11)
    most = max(services for *_, services in p.shapes)
    names = [f"budget-{k}" for k in range(most)]
    limits = {} if p.limit is None else {"http_max_conns_per_client": p.limit}
    agent = TlsDevAgent(name="budget", limits=limits)
    rows = []
    try:
        agent.start()
        c = agent.client()
        limit = c.agent.self()["DebugConfig"]["HTTPMaxConnsPerClient"]
        ids: dict[str, list[str]] = {}
        for name in names:
            ids[name] = [f"{name}-{k}" for k in range(p.instances)]
            for k, sid in enumerate(ids[name]):
                c.agent.service.register(
                    name, service_id=sid, address="127.0.0.1", port=20000 + k,
                    check={"TTL": "1h", "Status": "passing"},
                )  # fmt: skip
        c.http.session.close()  # the host's budget is the stand-ins' alone
        for shape in p.shapes:
            print(f"   conn_budget: {shape} ...", file=sys.stderr, flush=True)
            rows.append(run_shape(agent, shape, names, ids, p, rng))
            time.sleep(1.0)  # the previous row's connections close
    finally:
        with sigint_deferred():
            agent.cleanup()
    notes = [f"agent limit http_max_conns_per_client = {limit}"]
    notes += [f"{r['mode']} {r['host']}: {why}" for r in rows for why in r["_why"]]
    target = "×".join(map(str, p.target))
    chosen = [r for r in rows if r["mode"] == "relay_h2" and r["host"] == target]
    today = [r for r in rows if r["mode"] == "per_worker_http1" and r["host"] == target]
    checks = []
    if chosen:
        row, what = chosen[0], f"{target} host, relay_h2"
        checks += [
            at_most(f"{what}: agent connections", row["agent_conns"], limit),
            at_most(f"{what}: propagation p99", row["p99_ms"], 10, " ms"),
            at_most(f"{what}: first resolves failed", row["first_resolve_failed"], 0),
            at_least(f"{what}: share of changes seen by every worker", row["seen_share"], 1.0),
        ]
    one_app = [r for r in rows if r["mode"] == "relay_h2" and r["host"].startswith("1×")]
    if one_app:
        checks.append(
            at_most("one application's propagation p99 (relay_h2)", one_app[0]["p99_ms"], 10, " ms")
        )
    return Result(
        name="conn_budget",
        title=f"Connection budget: processes × workers × services vs one agent (limit {limit})",
        rows=[{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        checks=checks,
        charts=[
            Chart(
                "Check flip → each worker's new set (CDF)",
                "ms",
                (),
                {
                    f"{r['mode']} {r['host']}": [d * 1e3 for d in r["_delays"]]
                    for r in rows
                    if r["_delays"]
                },
                kind="cdf",
            )
        ],
        params={
            "limit_read_back": limit,
            "today_target_conns": today[0]["agent_conns"] if today else None,
        },
        notes=notes,
    )
