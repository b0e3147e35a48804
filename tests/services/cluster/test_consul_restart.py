"""The Consul agent restarts empty under open-loop load through the gateway: 0 failures.

The dev agent keeps its state in memory, so a restart forgets every registration; the
instances keep serving and their registrars re-register them within their reconcile
period. Meanwhile every ServiceClient in the cluster (the gateway's, and order-service's
calls to user-service) must keep calling the instances it last knew (the discovery
client's vanish rule, ``consul_discovery.client.preservation``), so no request fails.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from bench.loadgen import run_open_loop
from services.client import PlatformClient
from services.cluster import control
from services.cluster.plan import ClusterPlan
from tests.services.cluster.conftest import free_plan, stop_cluster

pytestmark = pytest.mark.slow

RATE = 15.0  # requests per second through the gateway
DURATION = 34.0  # seconds of load: RATE * DURATION = 510 requests
DOWN_AT = 5.0  # seconds into the load when the agent stops
DOWN_FOR = 12.0  # seconds the agent stays down


@pytest.fixture(scope="module")
def restart_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    """A cluster of our own: this module stops and restarts its Consul agent."""
    plan = free_plan(
        tmp_path_factory.mktemp("restart-cluster"), autorestart=False, check_interval="4s"
    )
    try:
        control.up(plan, timeout=120)
        yield plan
    finally:
        stop_cluster(plan)


def test_agent_restart_with_state_loss_loses_no_request(restart_cluster: ClusterPlan) -> None:
    plan = restart_cluster
    client = PlatformClient.via_gateway(plan.gateway_url)
    name = f"restart-{uuid.uuid4().hex[:8]}"
    client.register(name, "a long enough password")
    token = client.login(name, "a long enough password")
    order_id = client.create_order([("seed", 1)])["id"]

    session = requests.Session()
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
    headers = {"Authorization": f"Bearer {token}"}

    def call(seq: int) -> tuple[bool, str]:
        # gateway -> order-service -> user-service (token check): two discovery hops.
        response = session.get(
            f"{plan.gateway_url}/api/orders/{order_id}", headers=headers, timeout=10
        )
        return response.status_code == 200, f"{response.status_code} {response.text[:200]}"

    drill_errors: list[BaseException] = []
    timeline: dict[str, float] = {}

    def drill() -> None:
        try:
            time.sleep(DOWN_AT)
            control.supervisorctl(plan, "stop", "consul")
            timeline["stopped"] = time.monotonic()
            time.sleep(DOWN_FOR)
            control.supervisorctl(plan, "start", "consul")
            timeline["started"] = time.monotonic()
            control.wait_until(lambda: control.consul_ready(plan), 30, "Consul to come back")
            control.wait_passing(plan, plan.instances(), timeout=40)
            timeline["all_passing"] = time.monotonic()
        except BaseException as exc:
            drill_errors.append(exc)

    driller = threading.Thread(target=drill, name="consul-restart")
    driller.start()
    report = run_open_loop(call, rate=RATE, duration=DURATION)
    driller.join(timeout=120)

    assert not driller.is_alive(), "the restart drill did not finish"
    assert not drill_errors, drill_errors
    assert timeline["started"] - timeline["stopped"] >= 10.0
    assert "all_passing" in timeline, "the instances did not come back after the restart"
    assert len(report.outcomes) == int(RATE * DURATION)
    print(
        f"consul restart drill: {len(report.outcomes)} requests, "
        f"{len(report.failures)} failed; re-registered "
        f"{timeline['all_passing'] - timeline['started']:.1f}s after the restart"
    )
    assert report.failures == [], [f.detail for f in report.failures[:5]]
