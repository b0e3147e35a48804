"""Cross-datacenter failover: every dc1 user-service instance down and back, under load.

The multi-dc cluster (``tests/harness/multi_dc.py``: dc1 and dc2 WAN-federated on
loopback, the platform's services in both, two user-service instances in dc1) with a
service-resolver ``Failover: {"*": {"Datacenters": ["dc2"]}}`` for user-service.
Open-loop load through the real gateway (``tests/harness/drills.py``: half POSTs with an
Idempotency-Key, half GETs; every one has order-service verify its token with
user-service) while every dc1 user-service instance is stopped (drained, as supervisord
stops them), held down, then started. Per run: requests, failed, duplicate orders, p99,
and two times, both on the wall clock of this one machine:

- **fail over**: from the stop request to the first token check *answered* by
  user-service-dc2-1 (its access-log line, written as the answer leaves: ms resolution);
- **fail back**: from dc1 passing again (a blocking query on dc1's passing instances:
  Consul answers it as the set changes) to the first token check answered by a dc1
  instance after the start request (their access logs).

Also: from the stop request to dc1 having no passing instance in Consul and to the
instances stopped, and from the start request to dc1's first instance registered again
and passing again (the same blocking query, without and with ``passing``). The token
checks come at the load's rate, so both times include up to one request interval.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.result import Chart, Result, at_least, at_most
from services.cluster import control
from services.cluster.plan import ClusterPlan
from tests.harness import drills
from tests.harness.multi_dc import running_multi_dc_cluster

SERVICE = "user-service"
VERIFY = '"POST /tokens/verify"'  # the services' access-log line for a token check
RESOLVER = {"Kind": "service-resolver", "Name": SERVICE,
            "Failover": {"*": {"Datacenters": ["dc2"]}}}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Params:
    """Load rate and length, runs, when the fault starts, how long dc1 is held down and
    how long the load goes on once dc1 passes again."""

    rate: float = 16.0
    seconds: float = 24.0
    runs: int = 2
    fault_after: float = 3.0
    hold_down: float = 4.0
    settle: float = 3.0


FULL = Params()
QUICK = Params(rate=8.0, seconds=16.0, runs=1, fault_after=2.0, hold_down=2.0, settle=1.5)


def answered_at(log: Path, since: float) -> list[float]:
    """Wall-clock times (s) of the token checks ``log`` shows answered at or after ``since``.

    The services' access-log lines start with logging's ``asctime`` (local time, ms
    truncated: a line can read up to 1 ms early, hence the allowance).
    """
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    times = []
    for line in text.splitlines():
        if VERIFY not in line or " services.access " not in line:
            continue
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if stamp >= since - 0.001:
            times.append(stamp)
    return sorted(times)


class PassingWatch:
    """Times (wall clock) the first answer where dc1's instances meet ``predicate``.

    A blocking query on ``/v1/health/service/user-service`` (``passing``: only passing
    instances) on dc1's agent, in its own thread: Consul answers as soon as the set's
    index moves, so the time is that of the change plus one answer. Owned by the thread
    that starts it; ``at`` is written by the watch thread once and read after ``join``.
    """

    def __init__(
        self, plan: ClusterPlan, predicate: Callable[[list[Any]], bool], passing: bool = True
    ) -> None:
        self.url = f"http://{plan.consul_address}/v1/health/service/{SERVICE}"
        self.predicate = predicate
        self.passing = passing
        self.at: float | None = None  # watch thread writes once; read after join
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dc1-passing-watch", daemon=True)

    def start(self) -> PassingWatch:
        """Start watching (the first answer counts too)."""
        self._thread.start()
        return self

    def _run(self) -> None:
        index = "0"
        with requests.Session() as session:
            session.trust_env = False
            while not self._done.is_set():
                params = {"dc": "dc1", "index": index, "wait": "2s"}
                if self.passing:
                    params["passing"] = "1"
                try:
                    answer = session.get(self.url, params=params, timeout=10)
                    answer.raise_for_status()
                except requests.RequestException:
                    time.sleep(0.05)
                    continue
                if self.predicate(answer.json()):
                    self.at = time.time()
                    return
                index = answer.headers.get("X-Consul-Index", "0")

    def join(self, timeout: float) -> float:
        """Wait for the change (at most ``timeout`` s) and return its wall-clock time."""
        self._thread.join(timeout)
        self._done.set()
        if self.at is None:
            raise TimeoutError(f"dc1's {SERVICE} set did not change within {timeout:g}s")
        return self.at


def _fault(plan: ClusterPlan, p: Params) -> dict[str, float]:
    """Stop every dc1 user-service instance, hold them down, start them; time both ways."""
    home = [i for i in plan.instances_of(SERVICE) if i.datacenter == "dc1"]
    away = next(i for i in plan.instances_of(SERVICE) if i.datacenter == "dc2")
    gone = PassingWatch(plan, lambda entries: not entries).start()
    stop_at = time.time()
    control.stop_in_parallel(plan, [i.program for i in home])
    stopped_at = time.time()
    time.sleep(p.hold_down)  # served by dc2 only
    out_of_consul = gone.join(timeout=5) - stop_at
    dc2 = answered_at(plan.log_dir / f"{away.program}.log", stop_at)
    registered = PassingWatch(plan, lambda entries: bool(entries), passing=False).start()
    back = PassingWatch(plan, lambda entries: bool(entries)).start()
    start_at = time.time()
    control.start_programs(plan, [i.program for i in home])
    passing_at = back.join(timeout=60)
    registered_at = registered.join(timeout=5)
    control.wait_passing(plan, home, timeout=60)
    time.sleep(p.settle)  # served by dc1 again
    dc1 = sorted(t for i in home for t in answered_at(plan.log_dir / f"{i.program}.log", start_at))
    return {  # no answer on a side: NaN times, and the answer counts fail their checks
        "dc2_answers": len([t for t in dc2 if t < start_at]),
        "dc1_answers_after": len(dc1),
        "fail_over_s": dc2[0] - stop_at if dc2 else math.nan,
        "dc1_out_of_consul_s": out_of_consul,
        "stopped_s": stopped_at - stop_at,
        "start_to_registered_s": registered_at - start_at,
        "start_to_passing_s": passing_at - start_at,
        "fail_back_s": dc1[0] - passing_at if dc1 else math.nan,
        "fault_s": time.time() - stop_at,
    }


def run(p: Params) -> Result:
    """Start the multi-dc cluster, write the resolver, run the drill ``p.runs`` times."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-multi-dc-") as tmp:
        started = time.monotonic()
        with running_multi_dc_cluster(Path(tmp), users=2) as plan:
            startup = time.monotonic() - started
            dc1 = f"http://{plan.consul_address}"
            requests.put(f"{dc1}/v1/config", json=RESOLVER, timeout=5).raise_for_status()
            load = drills.GatewayLoad(plan)
            for n in range(1, p.runs + 1):
                result = drills.run_drill(
                    load, f"dc1 {SERVICE} stopped #{n}", lambda: _fault(plan, p),
                    p.rate, p.seconds, p.fault_after,
                )  # fmt: skip
                figures = result.figures
                if figures["fault_s"] >= p.seconds - p.fault_after:
                    raise RuntimeError(f"{result.name}: the fault outlasted the load: {figures}")
                rows.append({
                    "run": n, "requests": result.requests, "failed": len(result.failures),
                    "duplicates": result.duplicates, "p99_ms": round(result.p99_ms, 1),
                    **{k: round(v, 3) for k, v in figures.items()},
                })  # fmt: skip
                if result.failures:
                    notes.append(f"{result.name}: first failures {list(result.failures[:3])}")
    bad = sum(r["failed"] for r in rows)
    duplicates = sum(r["duplicates"] for r in rows)
    return Result(
        name="dc_failover",
        title=(
            f"Cross-DC failover: dc1's {SERVICE} down {p.hold_down:g} s, "
            f"{p.rate:g} req/s via the gateway"
        ),
        rows=rows,
        checks=[
            at_most("failed requests, all runs", bad, 0, note=f"{len(rows)} runs"),
            at_most("duplicate orders, all runs", duplicates, 0),
            at_least(
                "token checks answered by dc2 while dc1 was down, fewest in a run",
                min(r["dc2_answers"] for r in rows),
                1,
            ),
            at_least(
                "token checks answered by dc1 after its start, fewest in a run",
                min(r["dc1_answers_after"] for r in rows),
                1,
            ),
        ],
        charts=[
            Chart(
                "Time to fail over and to fail back, per run",
                "s",
                tuple(f"run {r['run']}" for r in rows),
                {
                    "fail over (stop → first dc2 answer)": [r["fail_over_s"] for r in rows],
                    "fail back (dc1 passing → first dc1 answer)": [r["fail_back_s"] for r in rows],
                },
            )
        ],
        params={"startup_s": round(startup, 1)},
        notes=notes,
    )
