"""A dependency outage stays where it is: user-service down, order-service still healthy.

Every user-service instance is stopped for ~15 s while ``POST /api/orders`` runs at
10 req/s open loop through the real gateway. order-service answers a relayed 503
(``Failure-Origin: dependency``); the gateway's discovery client must neither retry it
(nor sleep on its ``Retry-After``) nor count it against the order-service instance, so
callers get a clear 503 at once, no order-service instance is ejected, and orders succeed
again as soon as user-service is back.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import pytest
import requests

from bench.loadgen import run_open_loop
from services.client import PlatformClient
from services.cluster import control
from services.cluster.plan import ClusterPlan

pytestmark = pytest.mark.slow

RATE = 10.0  # requests per second
OUTAGE = 15.0  # seconds every user-service instance stays stopped
BEFORE, AFTER = 3.0, 6.0  # seconds of load before the stop and after the restart began
FAST_503 = 0.100  # p99 of the 503s during the outage, seconds
BACK_WITHIN = 1.0  # seconds after user-service passes again


@dataclass
class Timeline:
    """When the outage really began and ended (perf_counter seconds)."""

    down: float = 0.0  # every user-service process has stopped
    restart: float = 0.0  # the restart was asked for (still down until then)
    back: float = 0.0  # user-service passes its check in Consul again


def passing(plan: ClusterPlan, service: str) -> int:
    url = f"http://{plan.consul_address}/v1/health/service/{service}"
    return len(requests.get(url, params={"passing": 1}, timeout=5).json())


def ejection_lines(plan: ClusterPlan) -> list[str]:
    """Lines in the gateway's log where its discovery client ejected an instance."""
    text = (plan.log_dir / "gateway-1.log").read_text(errors="replace")
    return [line for line in text.splitlines() if ": ejected " in line]


def run_drill(plan: ClusterPlan) -> dict[str, object]:
    """One outage under load; returns the figures the test checks (and prints)."""
    client = PlatformClient.via_gateway(plan.gateway_url)
    name = f"drill-{uuid.uuid4().hex[:8]}"
    client.register(name, "a long enough password")
    token = client.login(name, "a long enough password")
    ejected_before = len(ejection_lines(plan))
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
    answers: dict[int, tuple[float, int]] = {}  # seq -> (send time, status)

    def call(seq: int) -> tuple[bool, str]:
        sent = time.perf_counter()
        response = session.post(
            f"{plan.gateway_url}/api/orders",
            json={"items": [{"sku": f"sku-{seq}", "quantity": 1}]},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"d-{seq}-{name}"},
            timeout=20,
        )
        answers[seq] = (sent, response.status_code)
        return response.status_code == 201, f"{response.status_code} {response.text[:120]}"

    timeline = Timeline()
    errors: list[BaseException] = []
    users = [inst.program for inst in plan.instances_of("user-service")]

    def outage() -> None:
        try:
            time.sleep(BEFORE)
            control.stop_in_parallel(plan, users, timeout=60)
            timeline.down = time.perf_counter()
            time.sleep(OUTAGE)
            timeline.restart = time.perf_counter()
            for program in users:
                control.supervisorctl(plan, "start", program)
            deadline = time.monotonic() + 60
            while passing(plan, "user-service") == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("user-service did not pass again within 60 s")
                time.sleep(0.02)
            timeline.back = time.perf_counter()
            control.wait_passing(plan, plan.instances_of("user-service"), 60)
        except BaseException as exc:
            errors.append(exc)

    fault = threading.Thread(target=outage, name="dependency-outage")
    fault.start()
    # The load runs until AFTER seconds past the restart (the restart's time varies).
    stop = threading.Event()
    watcher = threading.Thread(
        target=lambda: (fault.join(), time.sleep(AFTER), stop.set()), daemon=True
    )
    watcher.start()
    report = run_open_loop(call, rate=RATE, duration=120.0, stop=stop)
    fault.join(timeout=10)
    assert not errors, errors

    latency = {o.seq: o.latency for o in report.outcomes}
    # Sent while every user-service process was down (and not just before the restart).
    during = [
        (latency[seq], status)
        for seq, (sent, status) in answers.items()
        if timeline.down <= sent <= timeline.restart - 0.5
    ]
    after = [status for sent, status in answers.values() if sent >= timeline.back + BACK_WITHIN]
    first_ok = min(
        (
            sent - timeline.back
            for sent, status in answers.values()
            if sent >= timeline.back and status == 201
        ),
        default=None,
    )
    slow = sorted(lat for lat, _ in during)
    figures = {
        "requests": len(report.outcomes),
        "during_outage": len(during),
        "non_503_during": sorted({s for _, s in during} - {503}),
        "p50_503": slow[len(slow) // 2] if slow else None,
        "p99_503": slow[min(len(slow) - 1, int(len(slow) * 0.99))] if slow else None,
        "max_503": slow[-1] if slow else None,
        "after_back": len(after),
        "failed_after_back": sum(1 for s in after if s != 201),
        "first_success_after_back": first_ok,
        "ejections": ejection_lines(plan)[ejected_before:],
    }
    print("dependency drill:", figures)
    return figures


def test_dependency_outage_is_a_fast_503_and_ejects_nothing(small_cluster: ClusterPlan) -> None:
    plan = small_cluster
    assert passing(plan, "order-service") == 2
    figures = run_drill(plan)
    assert figures["during_outage"] >= RATE * (OUTAGE - 2)
    assert figures["non_503_during"] == [], figures
    assert figures["p99_503"] is not None and figures["p99_503"] < FAST_503, figures
    assert figures["ejections"] == [], figures
    assert figures["after_back"] >= RATE * (AFTER - BACK_WITHIN - 1)
    assert figures["failed_after_back"] == 0, figures
    assert figures["first_success_after_back"] is not None
    assert figures["first_success_after_back"] <= BACK_WITHIN, figures
    assert passing(plan, "order-service") == 2
