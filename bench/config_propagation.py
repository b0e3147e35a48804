"""7. Config propagation: a KV write → the ConfigClient's subscriber (ms).

A ConfigClient with its default watch timing and debounce (quiet 20 ms, max 200 ms)
watches a service's two layers on a real dev agent; each event is one KV write over HTTP,
the clock starting before the write and stopping when the subscriber gets the Update
(the new Settings already swapped in). Events: a changed value, a new key, a deleted key,
and a whole YAML document replaced. Target (issue 12): p99 <= 100 ms.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from bench.env import consul_agent
from bench.result import Chart, Result, at_most, summary
from consul_discovery.config import ConfigClient, Layers, Update
from consul_discovery.connection import ConsulConnection

SERVICE = "bench-config"


@dataclass(frozen=True, slots=True)
class Params:
    """Writes per event and the pause between writes (s)."""

    reps: int = 50
    gap: float = 0.05
    event_timeout: float = 5.0


FULL = Params()
QUICK = Params(reps=3, gap=0.02)


def run(p: Params) -> Result:
    """Time every event ``reps`` times against one agent and one client."""
    delays: dict[str, list[float]] = {
        "value changed": [],
        "new key": [],
        "key deleted": [],
        "document replaced": [],
    }
    arrivals: list[float] = []
    cond = threading.Condition()

    def record(update: Update) -> None:
        with cond:
            arrivals.append(time.perf_counter())
            cond.notify_all()

    with consul_agent() as agent:
        kv = f"{agent.url}/v1/kv/config/{SERVICE}"
        session = requests.Session()
        session.put(f"{kv}/limit", data=b"0", timeout=5)
        connection = ConsulConnection.from_env({}, address=agent.address)
        client = ConfigClient(Layers(SERVICE), connection=connection)
        client.start(fail_fast=True)
        client.subscribe(record)
        try:

            def timed(event: str, method: str, key: str, body: str | None) -> None:
                with cond:
                    seen = len(arrivals)
                start = time.perf_counter()
                session.request(method, f"{kv}/{key}", data=body, timeout=5).raise_for_status()
                with cond:
                    if not cond.wait_for(lambda: len(arrivals) > seen, p.event_timeout):
                        raise TimeoutError(f"{event}: no update in {p.event_timeout}s")
                    delays[event].append(arrivals[seen] - start)
                time.sleep(p.gap)

            for n in range(1, p.reps + 1):
                timed("value changed", "PUT", "limit", str(n))
                timed("new key", "PUT", f"flag{n}", "on")
                timed("key deleted", "DELETE", f"flag{n}", None)
                timed("document replaced", "PUT", "data", f"retry:\n  budget: {n / 1000}\n")
        finally:
            client.close()
            session.close()
    rows = []
    for event, values in delays.items():
        s = summary(values, scale=1e3)
        rows.append({"event": event, "p50_ms": s["p50"], "p99_ms": s["p99"], "n": s["n"]})
    worst = max(r["p99_ms"] for r in rows)
    return Result(
        name="config_propagation",
        title="Config propagation: KV write → ConfigClient subscriber (ms)",
        rows=rows,
        checks=[at_most("p99, worst event", worst, 100, " ms", "includes the 20 ms debounce")],
        charts=[
            Chart(
                "KV write → settings swapped",
                "ms",
                ("p50", "p99"),
                {r["event"]: [r["p50_ms"], r["p99_ms"]] for r in rows},
            )
        ],
    )
