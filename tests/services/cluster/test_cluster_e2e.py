"""The example platform end to end: a real cluster, the demo flow, an instance killed."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from consul_discovery.config.kv import KVStore
from consul_discovery.connection import ConsulConnection
from services.client import PlatformClient
from services.cluster import control
from services.cluster.canary import run_canary
from services.cluster.plan import REPO_ROOT, ClusterPlan
from services.demo import live_config_demo, run_demo
from tests.services.cluster.conftest import free_plan, kill_group_and_wait, stop_cluster

pytestmark = pytest.mark.slow


def passing_ids(plan: ClusterPlan, service: str) -> set[str]:
    url = f"http://{plan.consul_address}/v1/health/service/{service}"
    return {e["Service"]["ID"] for e in requests.get(url, params={"passing": 1}, timeout=5).json()}


@pytest.fixture
def canary_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    """The small cluster with one of its two order-service instances a canary (2.0.0)."""
    plan = free_plan(tmp_path_factory.mktemp("canary"), autorestart=False, order_canaries=1)
    try:
        control.up(plan, timeout=90)
        yield plan
    finally:
        stop_cluster(plan)


def test_demo_flow_and_canary_survive_a_killed_user_service_instance(
    canary_cluster: ClusterPlan,
) -> None:
    """`make demo`: the seed's flow, a live KV setting, the canary steered by Consul's
    config entries through the gateway; then a user-service instance is killed."""
    plan = canary_cluster
    expected = {i.instance_id for i in plan.instances_of("user-service")}
    assert passing_ids(plan, "user-service") == expected
    assert len(passing_ids(plan, "order-service")) == 2

    client = PlatformClient.via_gateway(plan.gateway_url)
    out = io.StringIO()
    first = run_demo(client, out)
    assert "demo OK" in out.getvalue()
    # A setting put in Consul KV takes effect in the gunicorn-served order-service.
    store = KVStore(ConsulConnection.from_env({}, address=plan.consul_address))
    live_config_demo(client, store, out)
    store.close()
    assert "422 too_many_items" in out.getvalue() and "live config OK" in out.getvalue()
    conn = ConsulConnection.from_env({}, address=plan.consul_address)
    figures = run_canary(conn, plan.gateway_url, out)
    print("\n" + out.getvalue())
    assert "canary OK" in out.getvalue()
    assert figures["header"].v1 == 0 and figures["header"].v2 == 50
    assert figures["0/100"].v1 == 0 and figures["100/0"].v2 == 0
    assert 0.02 <= figures["90/10"].v2_share <= 0.25
    for kind in ("service-router", "service-splitter", "service-resolver", "service-defaults"):
        gone = requests.get(
            f"http://{plan.consul_address}/v1/config/{kind}/order-service", timeout=5
        )
        assert gone.status_code == 404, kind

    victim = plan.instances_of("user-service")[0]
    pid = control.program_pid(plan, victim.program)
    assert pid is not None
    kill_group_and_wait(pid)  # the gunicorn master and its workers, no drain

    for run in range(3):  # right away, while Consul may still list the dead instance
        try:
            again = run_demo(PlatformClient.via_gateway(plan.gateway_url), io.StringIO())
        except Exception as exc:  # say which attempts failed how: the gateway logs them
            raise AssertionError(
                f"demo run {run + 1} after the kill failed: {exc}\n{upstream_failures(plan)}"
            ) from exc
        assert again["id"] != first["id"]


def upstream_failures(plan: ClusterPlan) -> str:
    """The gateway's log lines about failed upstream calls (each attempt's cause)."""
    lines: list[str] = []
    for log in sorted(plan.log_dir.glob("gateway*.log")):
        text = log.read_text(errors="replace").splitlines()
        lines += [f"{log.name}: {line}" for line in text if "fail" in line.lower()]
    return "\n".join(lines[-20:]) or "(the gateway logged no failed upstream call)"


def test_status_and_cli_report_a_running_cluster(small_cluster: ClusterPlan) -> None:
    env = {**os.environ, "CLUSTER_RUN_DIR": str(small_cluster.run_dir)}
    # The CLI reads the counts `up` saved; the ports come from the plan the test made,
    # so only check the pieces that don't depend on them.
    result = subprocess.run(
        [sys.executable, "-m", "services.cluster", "up"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "already running" in result.stderr
    rows = control.table(small_cluster)
    assert {r.health for r in rows} == {"passing"}
    assert len(rows) == 7


def test_a_taken_port_gives_a_clear_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    plan = free_plan(tmp_path_factory.mktemp("busy"))
    with socket.socket() as blocker:
        # As servers do: a connection of an earlier test in TIME_WAIT must not stop us.
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", plan.gateway_port))
        blocker.listen()
        with pytest.raises(control.PortInUseError, match=f"{plan.gateway_port} \\(gateway-1\\)"):
            control.up(plan)
    assert control.supervisord_pid(plan) is None
