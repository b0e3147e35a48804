"""The secure profile: ACLs default-deny, TLS, gossip encryption, servers and client agents.

One module-scoped secure cluster (3 servers, 2 client agents, gateway + 2 user-service +
2 order-service instances spread over the two hosts), in Consul's mesh as the profile
runs by default, serves every test here: the mesh (Connect-native instances, the
intentions written with the ``mesh-admin`` token and no service's, another service's
leaf refused, Prometheus scraping with its own identity), what each token may and may
not do, what the discovery client says when ACLs hide an answer, the UI over HTTPS
after logging in, and five failure drills under open-loop load through the gateway,
each with 0 failed requests and no duplicate order.
"""

from __future__ import annotations

import io
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest
import requests

from consul_discovery.client import ConsulPermissionError, ConsulSource, ServiceClient
from consul_discovery.connection import ConsulConnection, acl_denial, filtered_by_acls
from consul_discovery.mesh.intentions_cli import (
    IntentionsCliError,
    list_intentions,
    set_intention,
)
from consul_discovery.mesh.service_identity import ServiceIdentity
from consul_discovery.registry import Registrar, Registration
from consul_discovery.registry.health import HealthChecks
from services.client import PlatformClient
from services.cluster import control, mesh, secure
from services.cluster.plan import MESH_SERVICES, ClusterPlan, InstancePlan
from services.cluster.supervisor_conf import instance_env
from services.demo import run_demo
from tests.harness import drills, secure_cluster
from tests.harness.browser import chromium, log_in, screenshot, wait_for_services_health

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

RATE = 16.0  # requests per second through the gateway during each drill
SECONDS = 20.0  # per drill; bounded: RATE * SECONDS requests


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    """The secure cluster in the mesh (the profile's default), all instances passing;
    supervisord restarts what dies."""
    started = time.monotonic()
    run_dir = tmp_path_factory.mktemp("secure")
    with secure_cluster.running_secure_cluster(run_dir, mesh=True, scrape_interval="1s") as plan:
        print(f"secure cluster all passing after {time.monotonic() - started:.1f}s")
        yield plan


# ---- the mesh (the secure profile's default) -------------------------------------------


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


@pytest.fixture(scope="module")
def load(cluster: ClusterPlan) -> drills.GatewayLoad:
    """Users with a seed order each, shared by the drills."""
    return drills.GatewayLoad(cluster)


def host_agent(plan: ClusterPlan, n: int) -> str:
    return plan.client_hosts[n]


# ---- what the profile closes ----------------------------------------------------------


def test_files_of_secrets_are_private(cluster: ClusterPlan) -> None:
    for path in [*cluster.token_dir.iterdir(), *cluster.tls_dir.rglob("*key.pem")]:
        assert path.stat().st_mode & 0o077 == 0, path
    assert cluster.token_dir.stat().st_mode & 0o077 == 0
    for agent in cluster.agents():
        assert (cluster.agent_dir(agent) / "agent.json").stat().st_mode & 0o077 == 0


def test_plain_http_is_closed_and_client_agents_want_a_certificate(cluster: ClusterPlan) -> None:
    for agent in cluster.agents():
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect((agent.host, cluster.consul.http))  # no plain-HTTP listener
    # A client agent's HTTPS API verifies the caller's certificate; servers' does not.
    no_cert = ConsulConnection.from_env(
        {}, address=cluster.agent_address(host_agent(cluster, 0)), ca_file=str(cluster.ca_file)
    )
    with no_cert.session() as session, pytest.raises(requests.exceptions.SSLError):
        session.get(f"{no_cert.base_url}/v1/status/leader", timeout=5)
    # ... and the certificate every agent shows chains to the cluster's CA.
    server = ConsulConnection.from_env(
        {}, address=cluster.consul_address, ca_file=str(cluster.ca_file)
    )
    with server.session() as session:
        assert session.get(f"{server.base_url}/v1/status/leader", timeout=5).ok
    untrusting = ssl.create_default_context()
    host = cluster.server_hosts[0]
    with (
        socket.create_connection((host, cluster.consul.https), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        untrusting.wrap_socket(raw, server_hostname=host)


def test_anonymous_reads_return_nothing(cluster: ClusterPlan) -> None:
    anonymous = secure_cluster.connection(cluster, None, host=host_agent(cluster, 0))
    with anonymous.session() as session:
        services = session.get(f"{anonymous.base_url}/v1/catalog/services", timeout=5)
        assert services.status_code == 200 and services.json() == {}
        health = session.get(f"{anonymous.base_url}/v1/health/service/user-service", timeout=5)
        assert health.status_code == 200 and health.json() == []
        nodes = session.get(f"{anonymous.base_url}/v1/catalog/nodes", timeout=5)
        assert nodes.status_code == 200 and nodes.json() == []
        kv = session.get(f"{anonymous.base_url}/v1/kv/?recurse=true", timeout=5)
        assert kv.status_code in (403, 404)
    # The discovery client says why, instead of "no instances" or "unknown service".
    with ConsulSource(connection=anonymous) as source:
        with pytest.raises(ConsulPermissionError, match="service:read"):
            source.list_instances("user-service")
        with pytest.raises(ConsulPermissionError, match="service:read"):
            source.resolve("user-service", timeout=5)


def test_a_service_token_registers_only_its_own_service(cluster: ClusterPlan) -> None:
    user = secure_cluster.connection(cluster, "user-service", host=host_agent(cluster, 0))
    with user.session() as session:
        foreign = {"ID": "order-service-intruder", "Name": "order-service", "Port": 9}
        url = f"{user.base_url}/v1/agent/service/register"
        refused = session.put(url, json=foreign, timeout=5)
        assert refused.status_code == 403
        denial = acl_denial(refused.text, "register order-service-intruder")
        assert (denial.permission, denial.resource) == ("service:write", "order-service")
        assert "'service:write' on 'order-service'" in str(denial)
        assert cluster.token_file("user-service").read_text().strip() not in str(denial)
        # Its own name it may register and deregister.
        own = {"ID": "user-service-extra", "Name": "user-service", "Port": 9}
        assert session.put(url, json=own, timeout=5).status_code == 200
        gone = session.put(
            f"{user.base_url}/v1/agent/service/deregister/user-service-extra", timeout=5
        )
        assert gone.status_code == 200


def test_the_registrar_with_another_services_token_never_registers(cluster: ClusterPlan) -> None:
    inst = cluster.instances_of("user-service")[0]
    env = {
        **instance_env(cluster, inst),
        "SERVICE_NAME": "order-service",
        "SERVICE_ID": "order-service-impostor",
        "SERVICE_PORT": "9",
    }
    # user-service's token; a mesh instance's TTL check needs a health function
    registrar = Registrar(Registration.from_env(env), health=HealthChecks().evaluate).start()
    try:
        assert not registrar.wait_registered(timeout=3)
    finally:
        registrar.close(timeout=5)
    rows = control.table(cluster)
    assert "order-service-impostor" not in {r.instance for r in rows}
    with ConsulSource(connection=control.tooling_connection(cluster)) as source:
        ids = {i.id for i in source.list_instances("order-service")}
    assert "order-service-impostor" not in ids


def test_services_reach_consul_through_its_own_environment_variables(
    cluster: ClusterPlan,
) -> None:
    inst = cluster.instances_of("order-service")[1]
    env = instance_env(cluster, inst)
    assert env["CONSUL_HTTP_ADDR"] == f"https://{inst.host}:{cluster.consul.https}"
    connection = ConsulConnection.from_env(env)  # exactly what the instance's process reads
    assert connection.token and connection.client_cert and connection.ca_file
    assert connection.token not in repr(connection)
    with ServiceClient(connection=connection) as client:
        instances = client.source.resolve("user-service", timeout=5).instances
        assert {i.id for i in instances} == {
            i.instance_id for i in cluster.instances_of("user-service")
        }


def test_a_token_without_node_read_gets_a_permission_error(cluster: ClusterPlan) -> None:
    admin = secure_cluster.connection(cluster, "management")
    with admin.session() as session:
        policy = session.put(
            f"{admin.base_url}/v1/acl/policy",
            json={"Name": "services-only", "Rules": 'service_prefix "" { policy = "read" }'},
            timeout=5,
        ).json()
        made = session.put(
            f"{admin.base_url}/v1/acl/token",
            json={"Description": "no node:read", "Policies": [{"ID": policy["ID"]}]},
            timeout=5,
        ).json()
    blind = secure_cluster.connection(cluster, None).with_token(made["SecretID"])
    with blind.session() as session:
        health = session.get(f"{blind.base_url}/v1/health/service/order-service", timeout=5)
        assert health.json() == [] and filtered_by_acls(health.headers)
    with ConsulSource(connection=blind) as source:
        with pytest.raises(ConsulPermissionError, match="node:read") as caught:
            source.resolve("order-service", timeout=5)
        assert made["SecretID"] not in str(caught.value)
    with ServiceClient(connection=blind) as client, pytest.raises(ConsulPermissionError):
        client.get("order-service", "/health")


def test_ui_over_https_after_logging_in(cluster: ClusterPlan) -> None:
    operator = secure_cluster.connection(cluster, secure.OPERATOR)
    with operator.session() as session:
        me = session.get(f"{operator.base_url}/v1/acl/token/self", timeout=5).json()
    assert cluster.consul_ui_url.startswith("https://")
    with chromium(extra_flags=("--ignore-certificate-errors",)) as browser:
        log_in(browser, cluster.consul_ui_url, me["SecretID"], me["AccessorID"])
        seen = wait_for_services_health(
            browser,
            cluster.consul_ui_url,
            {"gateway": "passing", "user-service": "passing", "order-service": "passing"},
        )
        assert seen["consul"] == "passing"
        shot = screenshot(browser, "consul-ui-secure-logged-in")
        assert shot.stat().st_size > 10_000


# ---- drills under load ----------------------------------------------------------------


def _assert_clean(result: drills.DrillResult, plan: ClusterPlan) -> None:
    print(
        f"drill {result.name}: {result.requests} requests, {len(result.failures)} failed, "
        f"{result.duplicates} duplicate orders, p99 {result.p99_ms:.0f} ms, {result.figures}"
    )
    assert result.requests == int(RATE * SECONDS)
    assert result.failures == (), result.failures[:5]
    assert result.duplicates == 0
    control.wait_passing(plan, plan.instances(), 60)


def test_drill_kill_the_raft_leader(cluster: ClusterPlan, load: drills.GatewayLoad) -> None:
    result = drills.run_drill(
        load, "kill -9 leader", lambda: drills.kill_leader(cluster), RATE, SECONDS
    )
    _assert_clean(result, cluster)
    assert result.figures["new_leader_s"] < 15


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


def test_drill_restart_the_gateways_own_client_agent(
    cluster: ClusterPlan, load: drills.GatewayLoad
) -> None:
    # Host 1's agent serves the gateway's discovery reads: they fail while it restarts,
    # and the gateway keeps calling the instances it last knew.
    result = drills.run_drill(
        load, "restart gateway's agent", lambda: drills.restart_client_agent(cluster, 0), RATE,
        SECONDS,
    )  # fmt: skip
    _assert_clean(result, cluster)


def test_drill_kill_an_instance(cluster: ClusterPlan, load: drills.GatewayLoad) -> None:
    victim = cluster.instances_of("order-service")[0].program
    result = drills.run_drill(
        load, "kill -9 instance", lambda: drills.kill_instance(cluster, victim), RATE, SECONDS
    )
    _assert_clean(result, cluster)


def test_drill_rolling_restart(cluster: ClusterPlan, load: drills.GatewayLoad) -> None:
    result = drills.run_drill(
        load, "rolling restart", lambda: drills.rolling_restart(cluster, "order-service"), RATE,
        SECONDS, fault_after=2.0,
    )  # fmt: skip
    _assert_clean(result, cluster)
