"""Cold start without Consul: Consul stopped, order-service restarted, its calls succeed.

order-service keeps its last-known instances of user-service and inventory-service on
disk (``DISCOVERY_SNAPSHOT_DIR``). Under open-loop load through the real gateway (POSTs
that check the user and reserve stock, GETs that check the user), Consul is stopped,
then an order-service instance is restarted (gunicorn: a new master and worker, no
watch): Consul cannot be reached, so its first resolves are answered from the snapshot
and its calls to both dependencies succeed, straight to it and, once the gateway sends
it traffic again, through the gateway. Consul comes back (the dev agent, empty; the
registrars register again) and the first live answers replace the snapshots
(``discovery_client_from_snapshot`` back to 0), and the load goes on 5 s more. 0 failed
requests, no duplicate order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from services.cluster import control
from services.cluster.plan import ClusterPlan, InstancePlan
from tests.harness import drills
from tests.services.cluster.conftest import free_plan, stop_cluster

pytestmark = pytest.mark.slow

RATE = 15.0  # requests per second through the gateway
SECONDS = 110.0  # at most: the load runs until 5 s after Consul's answers are back
DEPENDENCIES = ("user-service", "inventory-service")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    """A dev cluster whose order-service instances keep discovery snapshots."""
    run_dir = tmp_path_factory.mktemp("cold-start")
    snapshots = run_dir / "order-snapshots"
    plan = free_plan(
        run_dir,
        service_env=(("order-service", "DISCOVERY_SNAPSHOT_DIR", str(snapshots)),),
    )
    try:
        control.up(plan, timeout=120)
        yield plan
    finally:
        stop_cluster(plan)


def snapshot_dir(plan: ClusterPlan) -> Path:
    return next(Path(v) for s, n, v in plan.service_env if n == "DISCOVERY_SNAPSHOT_DIR")


def gauge(inst: InstancePlan, name: str, upstream: str) -> float | None:
    """One discovery gauge of an instance's /metrics (None: not there yet)."""
    try:
        text = requests.get(f"http://{inst.address}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    match = re.search(rf'^{name}\{{[^}}]*upstream="{upstream}"[^}}]*\}} (\S+)$', text, re.M)
    return float(match[1]) if match else None


def wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        time.sleep(0.1)


def order_call(inst: InstancePlan, token: str) -> None:
    """POST an order straight to one instance: it resolves both its dependencies."""
    response = requests.post(
        f"http://{inst.address}/orders",
        json={"items": [{"sku": "warm-up", "quantity": 1}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text


def test_a_service_restarted_while_consul_is_down_reaches_its_dependencies(
    cluster: ClusterPlan,
) -> None:
    plan = cluster
    orders = plan.instances_of("order-service")
    load = drills.GatewayLoad(plan)
    for inst in orders:  # each instance has resolved (and saved) both dependencies
        order_call(inst, load.tokens[0])
    saved = snapshot_dir(plan)
    wait(lambda: len(list(saved.glob("*.json"))) >= len(DEPENDENCIES), 10, "both snapshots")
    assert saved.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in saved.glob("*.json"))

    restarted = orders[0]

    def fault() -> dict[str, float]:
        figures: dict[str, float] = {}
        control.supervisorctl(plan, "stop", "consul")
        stopped = time.monotonic()
        # A full restart: a new gunicorn master and worker, no watch, Consul unreachable.
        control.supervisorctl(plan, "restart", restarted.program)
        wait(lambda: _healthy(restarted), 30, f"{restarted.program} serving")
        figures["restarted_s"] = time.monotonic() - stopped
        order_call(restarted, load.tokens[0])  # straight to it: both dependencies
        for upstream in DEPENDENCIES:  # ... reached through the snapshot
            wait(
                lambda u=upstream: gauge(restarted, "discovery_client_from_snapshot", u),
                20,
                f"{restarted.program} serving {upstream} from its snapshot",
            )
        age = gauge(restarted, "discovery_client_snapshot_age_seconds", "user-service")
        figures["snapshot_age_s"] = age or 0.0
        # The gateway ejected the instance while it restarted (connection refused) and
        # cannot hear from Consul that it is back: once that ejection ends, the load
        # goes through it too, still without Consul.
        wait(lambda: _orders_served(restarted) >= 20, 60, "gateway load through it")
        figures["served_without_consul"] = _orders_served(restarted)
        control.supervisorctl(plan, "start", "consul")
        started = time.monotonic()
        figures["consul_down_s"] = started - stopped
        control.wait_until(lambda: control.consul_ready(plan), 30, "Consul to come back")
        control.wait_passing(plan, plan.instances(), timeout=40)
        for upstream in DEPENDENCIES:  # the first live answers replaced the snapshots
            wait(
                lambda u=upstream: gauge(restarted, "discovery_client_from_snapshot", u) == 0.0,
                30,
                f"{restarted.program}'s live {upstream}",
            )
        figures["replaced_after_consul_back_s"] = time.monotonic() - started
        return figures

    result = drills.run_drill_through(
        load, "cold start without Consul", fault, RATE, SECONDS, tail=5.0
    )
    print(
        f"drill {result.name}: {result.requests} requests, {len(result.failures)} failed, "
        f"{result.duplicates} duplicate orders, p99 {result.p99_ms:.0f} ms, {result.figures}"
    )
    assert result.requests >= int(RATE * result.figures["fault_end_s"])
    assert result.failures == (), result.failures[:5]
    assert result.duplicates == 0
    log = (plan.log_dir / f"{restarted.program}.log").read_text(errors="replace")
    assert "from the snapshot saved" in log and "replaces the snapshot" in log


def _orders_served(inst: InstancePlan) -> float:
    """Requests the instance answered on its /orders routes since it started."""
    try:
        text = requests.get(f"http://{inst.address}/metrics", timeout=5).text
    except requests.RequestException:
        return 0.0
    pattern = r'^http_server_requests_total\{[^}]*route="/orders[^"]*"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def _healthy(inst: InstancePlan) -> bool:
    try:
        return requests.get(f"http://{inst.address}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False
