"""The example platform in Consul's mesh (``MESH=1``): one real cluster for the module.

Every service but the gateway serves Connect-native mTLS only; every call between
services goes through the mesh with the caller's own leaf; the intentions written at
`up` allow exactly the platform's call graph (``services.cluster.mesh.EDGES``) and
deny the rest; Prometheus scrapes the mesh instances with a ``prometheus`` identity.
"""

from __future__ import annotations

import io
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests

from consul_discovery.connection import ConsulConnection
from consul_discovery.mesh.intentions_cli import list_intentions, set_intention
from consul_discovery.mesh.service_identity import ServiceIdentity
from services.client import ApiError, PlatformClient
from services.cluster import control, mesh
from services.cluster.plan import MESH_SERVICES, REPO_ROOT, ClusterPlan
from services.demo import run_demo
from tests.harness import drills
from tests.harness.waiting import wait_for
from tests.services.cluster.conftest import free_plan, stop_cluster

pytestmark = pytest.mark.slow

RATE = 16.0  # requests per second through the gateway during the drill
SECONDS = 20.0  # bounded: RATE * SECONDS requests


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    # One of the two order-service instances is a canary (2.0.0): `make demo` runs the
    # canary through the mesh.
    plan = free_plan(
        tmp_path_factory.mktemp("mesh"), mesh=True, autorestart=False, order_canaries=1
    )
    try:
        control.up(plan, timeout=120)
        yield plan
    finally:
        stop_cluster(plan)


@pytest.fixture(scope="module")
def consul(cluster: ClusterPlan) -> ConsulConnection:
    return ConsulConnection.from_env({}, address=cluster.consul_address)


def consul_get(plan: ClusterPlan, path: str, **params: Any) -> Any:
    response = requests.get(f"http://{plan.consul_address}{path}", params=params, timeout=5)
    response.raise_for_status()
    return response.json()


def test_the_seed_flow_works_through_the_gateway_and_the_mesh(cluster: ClusterPlan) -> None:
    out = io.StringIO()
    run_demo(PlatformClient.via_gateway(cluster.gateway_url), out)
    assert "demo OK" in out.getvalue()


def test_make_demo_also_shows_a_direct_call_refused(cluster: ClusterPlan) -> None:
    """`make demo` on a MESH=1 cluster: the seed flow, the live setting, a direct call to
    order-service without a certificate, refused, then the canary (its split routed by
    the gateway's calls through the mesh); MESH comes from the saved plan."""
    env = {**os.environ, "CLUSTER_RUN_DIR": str(cluster.run_dir), "MESH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "services.cluster", "demo"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    order = cluster.instances_of("order-service")[0]
    for shown in (
        "demo OK",
        "live config OK",
        f"[mesh] GET /health on order-service at {order.address}, no certificate",
        "-> refused at the TLS handshake",
        "mesh OK",
        "canary OK",
    ):
        assert shown in result.stdout, shown


def test_every_mesh_instance_is_connect_native_and_passing(cluster: ClusterPlan) -> None:
    for service in sorted(MESH_SERVICES):
        planned = {i.instance_id for i in cluster.instances_of(service)}
        connect = consul_get(cluster, f"/v1/health/connect/{service}", passing=1)
        assert {e["Service"]["ID"] for e in connect} == planned, service
        for entry in connect:
            assert entry["Service"]["Connect"] == {"Native": True}
            checks = [c for c in entry["Checks"] if c["ServiceID"]]
            assert [c["Type"] for c in checks] == ["ttl"], checks
            assert all(c["Status"] == "passing" for c in checks)
    # The gateway stays the one plain-HTTP entry point: not in the mesh's listing.
    assert consul_get(cluster, "/v1/health/connect/gateway") == []
    assert consul_get(cluster, "/v1/health/service/gateway", passing=1)


def test_the_intentions_are_exactly_the_call_graph_then_deny(
    cluster: ClusterPlan, consul: ConsulConnection
) -> None:
    found = {
        (row["SourceName"], row["DestinationName"], row["Action"])
        for row in list_intentions(consul)
    }
    expected = {(i.source, i.destination, i.action) for i in mesh.intentions()}
    assert found == expected
    assert ("*", "*", "deny") in found
    assert ("gateway", "user-service", "allow") in found  # the gateway's public routes
    assert ("order-service", "inventory-service", "allow") in found  # reservations


def test_a_call_without_a_certificate_is_refused_at_the_tls_handshake(
    cluster: ClusterPlan,
) -> None:
    order = cluster.instances_of("order-service")[0]
    probe = f"/orders?probe={uuid.uuid4().hex}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we present nothing and check nothing
    with (
        socket.create_connection((order.host, order.port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(raw) as tls,
    ):
        # TLS 1.3: the server checks our (missing) certificate after its Finished, so
        # the refusal (an alert, or the connection closed) comes on the first read.
        tls.sendall(f"GET {probe} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = tls.recv(1024)
        if not answer:
            raise ConnectionError("closed without an answer")
        pytest.fail(f"the server answered a caller without a certificate: {answer!r}")
    # Plain HTTP gets no HTTP answer at all.
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{order.address}{probe}", timeout=5)
    # Nothing reached the app: no access log line for the probe.
    time.sleep(0.5)
    log = (cluster.log_dir / f"{order.program}.log").read_text(errors="replace")
    assert probe.split("=")[1] not in log


def identity_of(plan: ClusterPlan, service: str) -> ServiceIdentity:
    conn = ConsulConnection.from_env({}, address=plan.consul_address)
    return ServiceIdentity(service, conn).start().wait_ready(15)


def test_another_services_valid_leaf_gets_403_naming_the_caller(cluster: ClusterPlan) -> None:
    order = cluster.instances_of("order-service")[0]
    url = f"https://{order.address}/orders"
    stranger = identity_of(cluster, "inventory-service")  # no intention lets it in
    allowed = identity_of(cluster, "gateway")
    try:
        context = stranger.client_tls.context_for("order-service")
        with httpx.Client(verify=context, timeout=5) as client:
            denied = client.get(url)
        assert denied.status_code == 403
        body = denied.json()
        assert body["error"] == "forbidden"
        assert body["caller"] == "inventory-service"
        assert body["destination"] == "order-service"
        # The same call with the gateway's leaf passes the mesh and reaches the app,
        # which wants a user token (401 in the platform's own error shape).
        with httpx.Client(verify=allowed.client_tls.context_for("order-service")) as client:
            reached = client.get(url, timeout=5)
        assert reached.status_code == 401, reached.text
        assert reached.json()["error"]["code"] != "forbidden"
    finally:
        stranger.close()
        allowed.close()


def test_denying_gateway_to_order_service_fails_gateway_calls_until_allowed_again(
    cluster: ClusterPlan, consul: ConsulConnection
) -> None:
    client = PlatformClient.via_gateway(cluster.gateway_url)
    run_demo(client, io.StringIO())  # registered and logged in; orders reachable

    def orders_status() -> int:
        try:
            client.list_orders()
        except ApiError as exc:
            return exc.status
        return 200

    assert orders_status() == 200
    set_intention(consul, "gateway", "order-service", "deny")
    try:
        wait_for(lambda: orders_status() == 403, 10, "the gateway's calls to be denied")
        with pytest.raises(ApiError) as denied:
            client.list_orders()
        error = denied.value.body["error"]
        assert denied.value.code == "forbidden"
        assert error["service"] == "order-service" and error["caller"] == "gateway"
        # Other edges are untouched: the gateway still reaches inventory-service.
        assert client.stock("book") >= 0
    finally:
        set_intention(consul, "gateway", "order-service", "allow")
    wait_for(lambda: orders_status() == 200, 10, "the gateway's calls to be allowed again")


FLIPS = 20  # deny-then-allow cycles of gateway -> order-service
FLIP_BOUND_S = 1.0  # p99 of the write -> first answer with the new decision


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_intention_flips_show_through_the_gateway_within_a_second(
    cluster: ClusterPlan, consul: ConsulConnection
) -> None:
    """20 times: deny gateway -> order-service, poll an order through the gateway every
    10 ms (open loop, from the intended send time) until it is refused (403 forbidden),
    then allow and poll until it is served again. p99 of write -> first refused and of
    write -> first served <= 1 s; no other answer than 200 or 403 forbidden."""
    load = drills.GatewayLoad(cluster, users=1)
    url = f"{cluster.gateway_url}/api/orders/{load.first_orders[0]}"
    headers = {"Authorization": f"Bearer {load.tokens[0]}"}

    def poll() -> int:
        response = load.session.get(url, headers=headers, timeout=5)
        mesh_403 = response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
        if response.status_code != 200 and not mesh_403:
            raise AssertionError(f"{response.status_code} {response.text[:300]}")
        return response.status_code

    def flip(action: str) -> Callable[[], None]:
        return lambda: set_intention(consul, "gateway", "order-service", action)

    denies: list[drills.FlipTiming] = []
    allows: list[drills.FlipTiming] = []
    assert poll() == 200
    try:
        for _ in range(FLIPS):
            denies.append(drills.time_flip(flip("deny"), poll, old=200, new=403))
            allows.append(drills.time_flip(flip("allow"), poll, old=403, new=200))
    finally:
        set_intention(consul, "gateway", "order-service", "allow")
        wait_for(lambda: poll() == 200, 10, "the gateway's calls to be allowed again")
    for name, timings in (("deny -> first 403", denies), ("allow -> first 200", allows)):
        firsts = [t.first_s * 1e3 for t in timings]
        settled = [t.settled_s * 1e3 for t in timings]
        writes = [t.write_s * 1e3 for t in timings]
        print(
            f"intention flip {name}: {len(timings)} flips, first p50 "
            f"{sorted(firsts)[len(firsts) // 2]:.0f} ms p99 {p99(firsts):.0f} ms max "
            f"{max(firsts):.0f} ms; every poll anew p99 {p99(settled):.0f} ms; "
            f"the write itself p99 {p99(writes):.0f} ms"
        )
    others = [(n, o) for n, t in enumerate(denies + allows) for o in t.others]
    assert others == [], others[:10]
    assert len(denies) == len(allows) == FLIPS
    assert p99([t.first_s for t in denies]) <= FLIP_BOUND_S
    assert p99([t.first_s for t in allows]) <= FLIP_BOUND_S


def prometheus_targets(plan: ClusterPlan) -> dict[str, dict[str, Any]]:
    """Prometheus' active targets by instance_id label."""
    body = requests.get(f"{plan.prometheus_url}/api/v1/targets", timeout=5).json()
    return {t["labels"].get("instance_id", "?"): t for t in body["data"]["activeTargets"]}


def test_prometheus_scrapes_the_mesh_instances_with_its_own_identity(
    cluster: ClusterPlan, consul: ConsulConnection
) -> None:
    def all_up() -> bool:
        found = prometheus_targets(cluster)
        return all(found.get(i.instance_id, {}).get("health") == "up" for i in cluster.instances())

    try:
        wait_for(all_up, 30, "every instance to be an up target")
    finally:
        print({k: (t["health"], t["lastError"]) for k, t in prometheus_targets(cluster).items()})
    found = prometheus_targets(cluster)
    assert set(found) == {i.instance_id for i in cluster.instances()}
    for inst in cluster.instances():
        target = found[inst.instance_id]
        job = "services-mesh" if inst.service in MESH_SERVICES else "services"
        assert target["labels"]["job"] == job, inst.instance_id
        assert target["scrapeUrl"].startswith("https://" if job == "services-mesh" else "http://")
        assert target["labels"]["service"] == inst.service
    # The scrapes passed the mesh as ``prometheus``: the mesh instances' own series are in.
    url = f"{cluster.prometheus_url}/api/v1/query"
    series = requests.get(
        url, params={"query": 'registry_registered{job="services-mesh"} == 1'}, timeout=5
    ).json()["data"]["result"]
    assert {s["metric"]["instance_id"] for s in series} == {
        i.instance_id for i in cluster.instances() if i.service in MESH_SERVICES
    }
    # Its identity's files are private.
    directory = cluster.mesh_identity_dir
    assert directory.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()} == {
        "cert.pem": 0o600,
        "key.pem": 0o600,
        "ca.pem": 0o600,
    }
    # The intention decides: without ``prometheus -> user-service`` its scrapes get 403.
    users = {i.instance_id for i in cluster.instances_of("user-service")}

    def users_health() -> set[tuple[str, str]]:
        found = prometheus_targets(cluster)
        return {(found[i]["health"], found[i]["lastError"]) for i in users}

    set_intention(consul, "prometheus", "user-service", "deny")
    try:
        wait_for(
            lambda: all(h == "down" and "403" in e for h, e in users_health()),
            15,
            "user-service's targets to be refused",
        )
    finally:
        set_intention(consul, "prometheus", "user-service", "allow")
    wait_for(lambda: users_health() == {("up", "")}, 15, "user-service's targets up again")


ROTATIONS = 2  # each ~20-30 s: the agent renews leaves within a 30 s jitter window
ROTATION_MAX_S = 100.0  # the load's bound per rotation: ca_rotation's 90 s and the tail


def test_drill_ca_rotation_under_load(cluster: ClusterPlan, consul: ConsulConnection) -> None:
    """Rotate the Connect CA (a new key, cross-signed) twice under open-loop order
    traffic through the gateway; each time the load runs until every mesh instance
    serves a leaf of the new root (checked on the wire: a handshake trusting the new
    root alone) and 2 s beyond: every request 2xx, no order made twice. Last here: it
    changes the CA."""
    caller = identity_of(cluster, "gateway")
    load = drills.GatewayLoad(cluster)
    try:
        for n in range(1, ROTATIONS + 1):
            result = drills.run_drill_through(
                load,
                f"CA rotation {n} (mesh)",
                lambda: drills.ca_rotation(cluster, consul, caller),
                rate=RATE,
                max_seconds=ROTATION_MAX_S,
            )
            print(
                f"{result.name}: {result.requests} requests, {len(result.failures)} failed, "
                f"{result.duplicates} duplicate orders, p99 {result.p99_ms:.0f} ms, "
                f"{ {k: round(v, 1) for k, v in result.figures.items()} }"
            )
            assert not result.failures, result.failures[:10]
            assert result.duplicates == 0
            assert result.requests >= int(RATE * result.figures["fault_end_s"])
    finally:
        caller.close()
