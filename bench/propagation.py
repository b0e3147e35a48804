"""5. Propagation: how long until the client stops (or starts) picking a changed instance.

A ServiceClient watches the service (blocking queries); a listener subscribed after the
client's Balancer records when each new instance set arrived, i.e. when the Balancer had
already swapped in a picker without (or with) the instance. Events, repeated:

- check critical: TTL check failed through the agent API (clock starts before the call);
- passing: the TTL check passed again, until the first picker that holds the instance;
- deregister, and register again (until first pick);
- kill -9 of a gunicorn backend with a 1 s HTTP check: Consul only notices at its next
  check, so here the clock for "after Consul's change" starts when a 10 ms poller of
  ``/v1/health/checks`` first sees the check critical; kill→Consul is reported apart.

Baseline: a client that re-reads Consul every 30 s (py-consul users' usual loop). Its
staleness after a change is the wait until its next poll plus one read: the poll phase
is uniform over the period, so p50 = 15 s + read and p99 = 29.7 s + read, with the
read time measured here. That is derived from the schedule, not slept through.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import requests

from bench.env import consul_agent, start_backends
from bench.result import Chart, Result, at_most, percentile, summary
from consul_discovery.client import Resolution, ServiceClient
from tests.harness.backends import Backend

SERVICE = "moving"
KILLED = "killed"


@dataclass(frozen=True, slots=True)
class Params:
    """Repetitions per event, the pause between events and the baseline's period."""

    reps: int = 15
    kills: int = 4
    gap: tuple[float, float] = (0.2, 0.5)
    poll_period: float = 30.0
    event_timeout: float = 10.0


FULL = Params()
QUICK = Params(reps=2, kills=1, gap=(0.05, 0.1))


class SetRecorder:
    """Listener recording (time, instance ids) of every Resolution a source pushes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: list[tuple[float, frozenset[str]]] = []  # watch thread appends

    def __call__(self, resolution: Resolution) -> None:
        ids = frozenset(i.id for i in resolution.instances)
        with self._cond:
            self._events.append((time.perf_counter(), ids))
            self._cond.notify_all()

    def mark(self) -> int:
        """A position: ``wait_for`` only looks at sets pushed after it."""
        with self._cond:
            return len(self._events)

    def wait_for(self, mark: int, wanted: Callable[[frozenset[str]], bool], timeout: float):
        """Time the first set after ``mark`` that satisfies ``wanted`` arrived."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while True:
                for t, ids in self._events[mark:]:
                    if wanted(ids):
                        return t
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(f"no matching instance set within {timeout}s")
                self._cond.wait(left)


def timed(rec: SetRecorder, action: Callable[[], object], wanted, timeout: float) -> float:
    """Seconds from just before ``action()`` until a set satisfying ``wanted`` arrives."""
    mark = rec.mark()
    t0 = time.perf_counter()
    action()
    return rec.wait_for(mark, wanted, timeout) - t0


def critical_seen(agent_url: str, check_id: str, timeout: float) -> float:
    """perf_counter time a 10 ms poller of the agent first sees ``check_id`` critical."""
    deadline = time.perf_counter() + timeout
    with requests.Session() as s:
        while time.perf_counter() < deadline:
            checks = s.get(f"{agent_url}/v1/health/checks/{KILLED}", timeout=1).json()
            if any(c["CheckID"] == check_id and c["Status"] == "critical" for c in checks):
                return time.perf_counter()
            time.sleep(0.01)
    raise TimeoutError(f"{check_id} not critical within {timeout}s")


def kill_once(agent, rec: SetRecorder, victim: Backend, timeout: float) -> tuple[float, float]:
    """kill -9 ``victim``: (kill→Consul critical, Consul critical→client); then restart it."""
    mark = rec.mark()
    t0 = time.perf_counter()
    victim.kill()
    t_consul = critical_seen(agent.url, victim.check_id, timeout)
    t_client = rec.wait_for(mark, lambda ids: victim.id not in ids, timeout)
    mark = rec.mark()  # before start: Consul's check may see it up before wait_ready does
    victim.start()
    victim.wait_ready()
    rec.wait_for(mark, lambda ids: victim.id in ids, timeout)
    return t_consul - t0, max(0.0, t_client - t_consul)


def run(p: Params) -> Result:
    """Repeat every event, then derive the 30 s poller's staleness from its schedule."""
    rng = random.Random(5)
    delays: dict[str, list[float]] = {
        "check critical": [],
        "deregistered": [],
        "kill -9 (after Consul)": [],
        "passing → first pick": [],
        "registered → first pick": [],
    }
    detect: list[float] = []  # kill -9 → Consul's check critical
    total: list[float] = []  # kill -9 → client
    with (
        consul_agent() as agent,
        start_backends(agent, SERVICE, 3, check="ttl") as moving,
        start_backends(agent, KILLED, 2) as killed,
        ServiceClient(agent.address) as client,
    ):
        recorders = {}
        for service in (SERVICE, KILLED):
            client.balancer(service)
            recorders[service] = SetRecorder()
            client.source.subscribe(service, recorders[service])
        rec, t = recorders[SERVICE], p.event_timeout
        for _ in range(p.reps):
            b = rng.choice(moving)
            gone, back = (lambda ids, b=b: b.id not in ids), (lambda ids, b=b: b.id in ids)
            fail, heal = partial(b.set_ttl, "critical"), partial(b.set_ttl, "passing")
            delays["check critical"].append(timed(rec, fail, gone, t))
            time.sleep(rng.uniform(*p.gap))
            delays["passing → first pick"].append(timed(rec, heal, back, t))
            time.sleep(rng.uniform(*p.gap))
            delays["deregistered"].append(timed(rec, b.deregister, gone, t))
            time.sleep(rng.uniform(*p.gap))
            register = partial(b.register, agent.client())
            delays["registered → first pick"].append(timed(rec, register, back, t))
            time.sleep(rng.uniform(*p.gap))
        for _ in range(p.kills):
            to_consul, to_client = kill_once(agent, recorders[KILLED], rng.choice(killed), t)
            detect.append(to_consul)
            total.append(to_consul + to_client)
            delays["kill -9 (after Consul)"].append(to_client)
        reads = []
        for _ in range(20):
            t0 = time.perf_counter()
            agent.client().health.service(SERVICE, passing=True)
            reads.append(time.perf_counter() - t0)
    read = percentile(reads, 50)
    rows = []
    for event, values in delays.items():
        s = summary(values, scale=1e3)
        rows.append({"event": event, "p50_ms": s["p50"], "p99_ms": s["p99"], "n": s["n"]})
    for event, values in (
        ("kill -9 → Consul critical (1 s HTTP check)", detect),
        ("kill -9 → client (total)", total),
    ):
        s = summary(values, scale=1e3)
        rows.append({"event": event, "p50_ms": s["p50"], "p99_ms": s["p99"], "n": s["n"]})
    poll = {"p50": (0.5 * p.poll_period + read) * 1e3, "p99": (0.99 * p.poll_period + read) * 1e3}
    rows.append(
        {
            "event": f"baseline: {p.poll_period:g} s poller (derived)",
            "p50_ms": poll["p50"],
            "p99_ms": poll["p99"],
            "n": "-",
        }
    )
    worst = max(r["p99_ms"] for r in rows[: len(delays)])
    ours_p50 = max(r["p50_ms"] for r in rows[: len(delays)])
    return Result(
        name="propagation",
        title="Propagation: Consul change → client picker (ms)",
        rows=rows,
        checks=[
            at_most(
                "p99 after Consul's change, worst event",
                worst,
                500,
                " ms",
                "from the API call (kill -9: from the poller seeing it critical)",
            ),
        ],
        charts=[
            Chart(
                "Consul change → client",
                "ms (log)",
                ("p50", "p99"),
                {
                    **{r["event"]: [r["p50_ms"], r["p99_ms"]] for r in rows[: len(delays)]},
                    "30 s poller": [poll["p50"], poll["p99"]],
                },
                log=True,
            )
        ],
        params={"poller_read_ms": read * 1e3, "poller_vs_ours_p50": poll["p50"] / ours_p50},
    )
