"""Locality: zone-aware routing's cross-zone share, and the spill when the local zone goes.

A dev agent; gunicorn backends (``tests/harness/backends.py``) of one service registered
through Consul's HTTP API with ``Locality`` zone-a or zone-b (equal counts, equal
weights, 1 s HTTP checks). A ServiceClient with ``ServiceConfig(zone="zone-a")`` sends
open-loop GETs. Phase 1, equal capacity: the share of calls answered in zone-b (target
<= 5%). Then each removal in turn, under the same load, with fresh zone-a instances in
between: "deregister, then stop" (a graceful shutdown: the registration goes first) and
"kill -9" (the processes die registered; Consul notices by its check). Per removal:
failed requests (target 0), zone-b's share of the calls sent after the removal began,
and when zone-a answered last.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from bench.calls import via_client
from bench.env import consul_agent, sigint_deferred
from bench.loadgen import LoadReport, run_open_loop
from bench.result import Chart, Result, at_most, percentile
from consul_discovery.client import ServiceClient, ServiceConfig
from tests.harness.agent import ConsulAgent
from tests.harness.backends import Backend, wait_until_passing
from tests.harness.ports import free_port

SERVICE = "zoned"
LOCAL, OTHER = "zone-a", "zone-b"


@dataclass(frozen=True, slots=True)
class Params:
    """Instances per zone, load rate, phase lengths and when the removal starts."""

    per_zone: int = 2
    rate: float = 50.0
    steady_seconds: float = 20.0
    removal_seconds: float = 12.0
    remove_at: float = 4.0


FULL = Params()
QUICK = Params(rate=25.0, steady_seconds=3.0, removal_seconds=4.0, remove_at=1.5)


def _register(agent: ConsulAgent, backend: Backend, zone: str) -> None:
    """Register ``backend`` with its zone's Locality and a 1 s HTTP check."""
    body = {
        "ID": backend.id, "Name": SERVICE, "Address": "127.0.0.1", "Port": backend.port,
        "Locality": {"Region": "bench", "Zone": zone},
        "Check": {"HTTP": f"{backend.url}/health", "Interval": "1s", "Timeout": "1s"},
    }  # fmt: skip
    url = f"{agent.url}/v1/agent/service/register"
    requests.put(url, json=body, timeout=5).raise_for_status()


def _zone_of(instance_id: str) -> str:
    """Backends are named ``SERVICE-ZONE-N``: the zone back from an answer's instance id."""
    return LOCAL if instance_id.startswith(f"{SERVICE}-{LOCAL}-") else OTHER


def _share(report: LoadReport, zone: str, since: float = 0.0) -> tuple[float, int]:
    """The share of successful calls sent at or after ``since`` (s) answered in ``zone``."""
    answered = [o for o in report.outcomes if o.ok and o.intended >= since]
    if not answered:
        return 0.0, 0
    return sum(_zone_of(o.detail) == zone for o in answered) / len(answered), len(answered)


class ZoneA:
    """The local zone's backends: started, registered, removed; owned by the bench thread."""

    def __init__(self, agent: ConsulAgent, count: int, generation: int) -> None:
        self.agent = agent
        self.backends = [
            Backend(id=f"{SERVICE}-{LOCAL}-{generation}{n}", service=SERVICE, port=free_port())
            for n in range(count)
        ]

    def start(self) -> None:
        """Start and register every backend (the caller waits for them to pass)."""
        for backend in self.backends:
            backend.start()
        for backend in self.backends:
            backend.wait_ready()
            _register(self.agent, backend, LOCAL)

    def deregister_then_stop(self) -> None:
        """A graceful shutdown: out of the catalog first, then SIGTERM (in-flight calls end)."""
        for backend in self.backends:
            url = f"{self.agent.url}/v1/agent/service/deregister/{backend.id}"
            requests.put(url, timeout=5).raise_for_status()
        for backend in self.backends:
            backend.stop()

    def kill(self) -> None:
        """kill -9 every process group; the registrations stay until the bench removes them."""
        for backend in self.backends:
            backend.kill()

    def remove(self) -> None:
        """Stop by PID and deregister whatever is left (a no-op when already done)."""
        for backend in self.backends:
            backend.stop()
            url = f"{self.agent.url}/v1/agent/service/deregister/{backend.id}"
            # After the agent stopped (the bench's finally) there is nothing to deregister.
            with contextlib.suppress(requests.RequestException):
                requests.put(url, timeout=5)


def _removal_run(
    client: ServiceClient, p: Params, removal: Callable[[], None], label: str
) -> dict[str, object]:
    """Open-loop load; ``removal`` at ``p.remove_at``; failed calls, zone-b share after."""
    began: list[float] = []
    errors: list[BaseException] = []
    origin = time.perf_counter()

    def remove() -> None:
        time.sleep(p.remove_at)
        began.append(time.perf_counter() - origin)
        try:
            removal()
        except BaseException as exc:
            errors.append(exc)

    remover = threading.Thread(target=remove, name="zone-a-removal")
    remover.start()
    report = run_open_loop(via_client(client, SERVICE), rate=p.rate, duration=p.removal_seconds)
    remover.join(timeout=60)
    if errors or not began:
        raise RuntimeError(f"{label}: the removal failed: {errors[:1]}")
    removed_at = began[0]
    after, n_after = _share(report, OTHER, since=removed_at)
    local_ends = [o.intended + o.latency for o in report.outcomes
                  if o.ok and _zone_of(o.detail) == LOCAL]  # fmt: skip
    last_local = (max(local_ends) - removed_at) * 1e3 if local_ends else float("nan")
    latencies = [o.latency for o in report.outcomes]
    return {
        "phase": f"zone-a removed: {label}",
        "requests": len(report.outcomes),
        "failed": len(report.failures),
        "zone_b_share": round(after, 4),
        "share_of": n_after,
        "last_zone_a_answer_ms": round(last_local, 1),
        "p99_ms": round(percentile(latencies, 99) * 1e3, 1),
        "failures": [o.detail for o in report.failures[:3]],
    }


def run(p: Params) -> Result:
    """Steady phase, then the two removals, each over freshly started zone-a instances."""
    zone_b = [Backend(id=f"{SERVICE}-{OTHER}-{n}", service=SERVICE, port=free_port())
              for n in range(p.per_zone)]  # fmt: skip
    generations: list[ZoneA] = []
    rows: list[dict[str, object]] = []
    try:
        with consul_agent() as agent:
            for backend in zone_b:
                backend.start()
            for backend in zone_b:
                backend.wait_ready()
                _register(agent, backend, OTHER)
            config = ServiceConfig(zone=LOCAL)
            with ServiceClient(agent.address, default_config=config) as client:
                removals = (("deregister, then stop", ZoneA.deregister_then_stop),
                            ("kill -9", ZoneA.kill))  # fmt: skip
                for generation, (label, removal) in enumerate(removals):
                    zone_a = ZoneA(agent, p.per_zone, generation)
                    generations.append(zone_a)
                    zone_a.start()
                    wait_until_passing(agent.client(), SERVICE, 2 * p.per_zone, timeout=30)
                    if generation == 0:
                        rows.append(_steady(client, p))
                    else:
                        _wait_local(client)
                    rows.append(_removal_run(client, p, lambda z=zone_a, r=removal: r(z), label))
                    zone_a.remove()
    finally:
        with sigint_deferred():
            for zone_a in generations:
                zone_a.remove()
            for backend in zone_b:
                backend.stop()
    return _result(p, rows)


def _wait_local(client: ServiceClient, timeout: float = 10.0) -> None:
    """Until the client's calls land in zone-a again (its watch saw the new instances)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_zone_of(client.get(SERVICE, "/").json()["instance"]) == LOCAL for _ in range(5)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"calls did not return to {LOCAL} within {timeout:g}s")


def _steady(client: ServiceClient, p: Params) -> dict[str, object]:
    """Equal capacity in both zones: how many calls cross to zone-b."""
    _wait_local(client)
    report = run_open_loop(via_client(client, SERVICE), rate=p.rate, duration=p.steady_seconds)
    share, n = _share(report, OTHER)
    return {
        "phase": "equal capacity",
        "requests": len(report.outcomes),
        "failed": len(report.failures),
        "zone_b_share": round(share, 4),
        "share_of": n,
        "last_zone_a_answer_ms": "",
        "p99_ms": round(percentile([o.latency for o in report.outcomes], 99) * 1e3, 1),
        "failures": [o.detail for o in report.failures[:3]],
    }


def _result(p: Params, rows: list[dict[str, object]]) -> Result:
    notes = [f"{row['phase']}: first failures {row['failures']}" for row in rows if row["failures"]]
    rows = [{k: v for k, v in row.items() if k != "failures"} for row in rows]
    steady, removed = rows[0], rows[1:]
    return Result(
        name="locality",
        title=(
            f"Zone-aware routing: {p.per_zone}+{p.per_zone} instances in {LOCAL}/{OTHER}, "
            f"caller in {LOCAL}, {p.rate:g} req/s open loop"
        ),
        rows=rows,
        checks=[
            at_most("cross-zone share at equal capacity", float(steady["zone_b_share"]), 0.05),
            *(
                at_most(
                    f"failed requests, {row['phase']}",
                    float(row["failed"]),
                    0,
                    note=f"{row['requests']} requests; zone-b share after: {row['zone_b_share']}",
                )
                for row in removed
            ),
            at_most("failed requests, equal capacity", float(steady["failed"]), 0),
        ],
        charts=[
            Chart(
                title="Share of calls answered in zone-b (caller in zone-a)",
                ylabel="share",
                labels=tuple(str(r["phase"]) for r in rows),
                series={"zone-b share": [float(r["zone_b_share"]) for r in rows]},
            )
        ],
        notes=notes,
    )
