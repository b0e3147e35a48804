"""``PROFILE=secure MESH=1``: the mesh on the cluster with ACLs default-deny and TLS.

One secure cluster for the module (3 servers, 2 client agents, the instances spread over
both hosts). Each service joins the mesh with its own service-identity token
(``service:write`` on itself: its leaf; ``intention:read`` on itself: the intentions
watch), the intentions are written with the ``mesh-admin`` token, and Prometheus
scrapes with the ``prometheus`` identity's own token.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import requests

from consul_discovery.mesh.intentions_cli import (
    IntentionsCliError,
    list_intentions,
    set_intention,
)
from consul_discovery.mesh.service_identity import ServiceIdentity
from services.client import PlatformClient
from services.cluster import mesh, secure
from services.cluster.plan import MESH_SERVICES, ClusterPlan, InstancePlan
from services.demo import run_demo
from tests.harness import drills, secure_cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    with secure_cluster.running_secure_cluster(
        tmp_path_factory.mktemp("meshsec"), mesh=True, scrape_interval="1s"
    ) as plan:
        yield plan


def test_the_seed_flow_works_through_the_gateway_and_the_mesh(cluster: ClusterPlan) -> None:
    out = io.StringIO()
    run_demo(PlatformClient.via_gateway(cluster.gateway_url), out)
    assert "demo OK" in out.getvalue()


def test_mesh_instances_are_connect_native_and_the_intentions_are_the_call_graph(
    cluster: ClusterPlan,
) -> None:
    operator = secure.connection(cluster, secure.OPERATOR)
    with operator.session() as session:
        for service in sorted(MESH_SERVICES):
            url = f"{operator.base_url}/v1/health/connect/{service}"
            entries = session.get(url, params={"passing": 1}, timeout=5).json()
            planned = {i.instance_id for i in cluster.instances_of(service)}
            assert {e["Service"]["ID"] for e in entries} == planned, service
    admin = secure.connection(cluster, secure.MESH_ADMIN)
    found = {(r["SourceName"], r["DestinationName"], r["Action"]) for r in list_intentions(admin)}
    assert found == {(i.source, i.destination, i.action) for i in mesh.intentions()}


def test_a_service_token_cannot_change_the_intentions(cluster: ClusterPlan) -> None:
    gateway = secure.connection(cluster, "gateway")
    with pytest.raises(IntentionsCliError, match="403"):
        set_intention(gateway, "gateway", "user-service", "deny")
    with pytest.raises(IntentionsCliError, match="403"):
        set_intention(gateway, "*", "*", "allow")


def test_another_services_leaf_gets_403_naming_the_caller(cluster: ClusterPlan) -> None:
    order = cluster.instances_of("order-service")[0]
    conn = secure.connection(cluster, "inventory-service", host=order.host)
    stranger = ServiceIdentity("inventory-service", conn).start().wait_ready(15)
    try:
        context = stranger.client_tls.context_for("order-service")
        with httpx.Client(verify=context, timeout=5) as client:
            denied = client.get(f"https://{order.address}/orders")
        assert denied.status_code == 403
        assert denied.json()["caller"] == "inventory-service"
    finally:
        stranger.close()


def test_prometheus_scrapes_every_instance_with_its_own_token(cluster: ClusterPlan) -> None:
    def targets() -> dict[str, tuple[str, str, str]]:
        body = requests.get(f"{cluster.prometheus_url}/api/v1/targets", timeout=5).json()
        return {
            t["labels"].get("instance_id", "?"): (t["health"], t["labels"]["job"], t["lastError"])
            for t in body["data"]["activeTargets"]
        }

    deadline = time.monotonic() + 30
    wanted = {i.instance_id for i in cluster.instances()}
    while True:
        found = targets()
        if set(found) == wanted and all(h == "up" for h, _, _ in found.values()):
            break
        assert time.monotonic() < deadline, f"targets not all up: {found}"
        time.sleep(0.5)
    for inst in cluster.instances():
        job = "services-mesh" if inst.service in MESH_SERVICES else "services"
        assert found[inst.instance_id][1] == job
    assert cluster.token_file("prometheus").stat().st_mode & 0o777 == 0o600


# ---- a drill under load ---------------------------------------------------------------

RATE = 16.0  # requests per second through the gateway during the drill
SECONDS = 20.0  # bounded: RATE * SECONDS requests


def served_serial(caller: ServiceIdentity, inst: InstancePlan) -> str:
    """The serial number of the leaf ``inst`` serves, from a handshake as ``caller``."""
    context = caller.client_tls.context_for(inst.service)
    with (
        socket.create_connection((inst.host, inst.port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        return str((tls.getpeercert() or {})["serialNumber"])


def test_drill_restart_a_client_agent_in_the_mesh(cluster: ClusterPlan) -> None:
    """Host 2's client agent stops and starts again under open-loop order traffic
    through the gateway (on host 1; order-service on host 2 answers through the mesh):
    every request 2xx, no order made twice. While the agent is away, order-service on
    host 2 keeps its identity (the same leaf on the wire) and its decisions: a stranger's
    leaf still gets 403, the gateway's reaches the app."""
    away = [a for a in cluster.agents() if not a.server][1]
    order = next(i for i in cluster.instances_of("order-service") if i.host == away.host)
    home = cluster.client_hosts[0]
    assert away.host != home
    gateway = ServiceIdentity("gateway", secure.connection(cluster, "gateway", host=home))
    stranger = ServiceIdentity(
        "inventory-service", secure.connection(cluster, "inventory-service", host=home)
    )
    gateway.start().wait_ready(15)
    stranger.start().wait_ready(15)
    seen: dict[str, object] = {}  # what the probes saw while the agent was away

    def while_away() -> None:
        seen["serial"] = served_serial(gateway, order)
        url = f"https://{order.address}/orders"
        with httpx.Client(verify=stranger.client_tls.context_for(order.service)) as client:
            denied = client.get(url, timeout=5)
            seen["stranger"] = (denied.status_code, denied.json().get("caller"))
        with httpx.Client(verify=gateway.client_tls.context_for(order.service)) as client:
            seen["gateway"] = client.get(url, timeout=5).status_code  # 401: the app's

    try:
        before = served_serial(gateway, order)
        load = drills.GatewayLoad(cluster)
        result = drills.run_drill(
            load,
            "restart a client agent (secure mesh)",
            lambda: drills.client_agent_away(cluster, 1, while_away, hold=6.0),
            rate=RATE,
            seconds=SECONDS,
        )
    finally:
        gateway.close()
        stranger.close()
    print(
        f"drill {result.name}: {result.requests} requests, {len(result.failures)} failed, "
        f"{result.duplicates} duplicate orders, p99 {result.p99_ms:.0f} ms, "
        f"{ {k: round(v, 1) for k, v in result.figures.items()} }; while away: {seen}"
    )
    assert result.requests == int(RATE * SECONDS)
    assert result.failures == (), result.failures[:10]
    assert result.duplicates == 0
    assert seen == {"serial": before, "stranger": (403, "inventory-service"), "gateway": 401}
