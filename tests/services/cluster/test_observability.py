"""Metrics and traces on a real cluster: Prometheus finds every instance through Consul.

One cluster for the module (1 gateway, 2 user-service, 2 order-service instances, two
gunicorn workers each, supervisord restarting killed instances) with Prometheus
scraping every second.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from services.client import PlatformClient
from services.cluster import control
from services.cluster.plan import ClusterPlan, InstancePlan
from services.demo import run_demo
from tests.harness.browser import chromium, screenshot
from tests.harness.waiting import wait_for
from tests.services.cluster.conftest import free_plan, kill_group_and_wait, stop_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPlan]:
    plan = free_plan(tmp_path_factory.mktemp("observed"), workers=2, autorestart=True)
    try:
        control.up(plan, timeout=120)
        yield plan
    finally:
        stop_cluster(plan)


def targets(plan: ClusterPlan) -> dict[str, dict[str, Any]]:
    """Prometheus' active targets by instance_id label."""
    body = requests.get(f"{plan.prometheus_url}/api/v1/targets", timeout=5).json()
    return {t["labels"].get("instance_id", "?"): t for t in body["data"]["activeTargets"]}


def query(plan: ClusterPlan, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    url = f"{plan.prometheus_url}/api/v1/query"
    response = requests.get(url, params={"query": expr}, timeout=5)
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def all_up(plan: ClusterPlan) -> bool:
    found = targets(plan)
    return all(found.get(inst.instance_id, {}).get("health") == "up" for inst in plan.instances())


def scrape(inst: InstancePlan) -> dict[str, float]:
    """An instance's /metrics as {sample line's name+labels: value}."""
    text = requests.get(f"http://127.0.0.1:{inst.port}/metrics", timeout=5).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_every_instance_is_an_up_target_found_through_consul(cluster: ClusterPlan) -> None:
    wait_for(lambda: all_up(cluster), 30, "every instance to be an up target")
    found = targets(cluster)
    for inst in cluster.instances():
        labels = found[inst.instance_id]["labels"]
        assert labels["service"] == inst.service
        assert labels["version"] == "1.0.0"
    assert set(found) == {i.instance_id for i in cluster.instances()}  # only metrics servers
    count = len(cluster.instances())
    up = wait_for(lambda: len(query(cluster, 'up{job="services"} == 1')) == count or None, 10, "up")
    assert up
    registered = wait_for(
        lambda: len(query(cluster, "registry_registered == 1")) == count or None, 10, "registered"
    )
    assert registered


def test_demo_requests_show_per_route_and_one_id_crosses_every_service(
    cluster: ClusterPlan,
) -> None:
    client = PlatformClient.via_gateway(cluster.gateway_url)
    order = run_demo(client, io.StringIO())
    rid = f"rid-{uuid.uuid4().hex}"
    response = requests.get(
        f"{cluster.gateway_url}/api/orders/{order['id']}",
        headers={"Authorization": f"Bearer {client.token}", "X-Request-Id": rid},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == rid

    expected = {
        ("gateway", "/api/users/register"),  # the gateway's public routes, one each
        ("gateway", "/api/users/login"),
        ("gateway", "/api/orders"),
        ("gateway", "/api/orders/<rest>"),
        ("gateway", "/api/stock/<rest>"),
        ("user-service", "/register"),
        ("user-service", "/login"),
        ("user-service", "/tokens/verify"),
        ("order-service", "/orders"),
        ("order-service", "/orders/<int:order_id>"),
        ("inventory-service", "/reservations"),  # an ASGI service, the same series
        ("inventory-service", "/stock/{sku}"),
    }

    def routes() -> set[tuple[str, str]]:  # templates, not paths (the converter's args cut)
        series = query(cluster, "sum by (service, route) (http_server_requests_total)")
        found = {(s["metric"]["service"], s["metric"]["route"]) for s in series}
        return found

    wait_for(lambda: expected <= routes(), 15, f"per-route series {expected}")
    # The gateway's discovery client's calls (the demo reads stock through it too).
    upstreams = {"user-service", "order-service", "inventory-service"}
    wait_for(
        lambda: (
            upstreams
            == {
                s["metric"]["upstream"]
                for s in query(cluster, 'discovery_client_calls_total{service="gateway"} > 0')
            }
        ),
        10,
        "the gateway's discovery client series",
    )
    assert query(cluster, 'discovery_client_attempts_total{upstream="user-service"}')

    # The one request went gateway -> order-service -> user-service (token check).
    def services_logging(rid: str) -> set[str]:
        crossed = set()
        for inst in cluster.instances():
            log = (cluster.log_dir / f"{inst.program}.log").read_text(errors="replace")
            lines = [line for line in log.splitlines() if f"rid={rid}" in line]
            if lines:
                crossed.add(inst.service)
        return crossed

    crossed = wait_for(
        lambda: services_logging(rid) == {"gateway", "order-service", "user-service"},
        10,
        "the request id in every service's access log",
    )
    assert crossed
    traces = set()
    for inst in cluster.instances():
        log = (cluster.log_dir / f"{inst.program}.log").read_text(errors="replace")
        traces |= {
            line.split(" trace=")[1].split()[0] for line in log.splitlines() if f"rid={rid}" in line
        }
    assert len(traces) == 1 and len(traces.pop()) == 32  # one trace id, across all three


def _workers(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def test_a_worker_restart_neither_resets_nor_doubles_counters(cluster: ClusterPlan) -> None:
    inst = cluster.instances_of("user-service")[1]
    master = control.program_pid(cluster, inst.program)
    assert master is not None
    workers = wait_for(lambda: len(_workers(master)) == 2 and _workers(master), 20, "2 workers")
    key = 'http_server_requests_total{method="GET",route="/openapi.json",status="200"}'
    url = f"http://127.0.0.1:{inst.port}/openapi.json"
    session = requests.Session()
    for _ in range(30):  # spread over both workers by the kernel
        assert session.get(url, timeout=5).status_code == 200
    session.close()
    before = scrape(inst)[key]
    assert before >= 30

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(_workers(master)) == 2 and victim not in _workers(master),
        20,
        "gunicorn to replace the killed worker",
    )
    assert scrape(inst)[key] == before  # not reset, not doubled
    for _ in range(10):
        assert requests.get(url, timeout=5).status_code == 200
    assert scrape(inst)[key] == before + 10
    # Prometheus sees the same monotonic series (no reset it would have to paper over).
    series = f'{key[: key.index("}")]},instance_id="{inst.instance_id}"}}'
    wait_for(lambda: query(cluster, f"{series} == {before + 10}"), 10, "Prometheus' view")
    assert not query(cluster, f"resets({series}[5m]) > 0")


def test_a_killed_instance_goes_down_and_comes_back_as_a_target(cluster: ClusterPlan) -> None:
    wait_for(lambda: all_up(cluster), 30, "every instance to be an up target")
    victim = cluster.instances_of("order-service")[0]
    pid = control.program_pid(cluster, victim.program)
    assert pid is not None
    # supervisord restarts a killed instance at once and gunicorn binds its port before
    # its workers boot, so a SIGKILL alone may never cost a scrape. Freeze it first (a
    # hung instance): its scrapes time out and the target goes down; then kill it.
    os.killpg(pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: targets(cluster).get(victim.instance_id, {}).get("health") == "down",
            15,
            "the frozen instance's target to go down",
        )
    finally:
        kill_group_and_wait(pid)
    # supervisord restarts it; once Consul has it passing again, one scrape brings it up.
    control.wait_passing(cluster, [victim], 60)
    passing_at = time.monotonic()
    wait_for(
        lambda: targets(cluster).get(victim.instance_id, {}).get("health") == "up",
        10,
        "the restarted instance's target to come up",
    )
    took = time.monotonic() - passing_at
    # One 1 s scrape interval, plus the 0.5 s target refresh and polling slack.
    assert took < 3.0, f"target came up {took:.1f}s after the instance passed"


def test_rolling_restart_request_rate_graph(cluster: ClusterPlan) -> None:
    wait_for(lambda: all_up(cluster), 30, "every instance to be an up target")
    client = PlatformClient.via_gateway(cluster.gateway_url)
    client.register(name := f"graph-{uuid.uuid4().hex[:8]}", "password123")
    client.login(name, "password123")
    stop = threading.Event()
    failures: list[int] = []

    def load() -> None:  # 20 req/s open loop through the gateway, until stopped
        session = requests.Session()
        headers = {"Authorization": f"Bearer {client.token}"}
        next_at = time.monotonic()
        while not stop.is_set():
            status = session.get(f"{cluster.gateway_url}/api/orders", headers=headers, timeout=10)
            if status.status_code != 200:
                failures.append(status.status_code)
            next_at += 0.05
            time.sleep(max(0.0, next_at - time.monotonic()))
        session.close()

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        time.sleep(4)
        control.rolling_restart(cluster, "order-service", timeout=60, log=lambda _msg: None)
        time.sleep(4)
    finally:
        stop.set()
        loader.join(15)
    assert not failures, f"non-2xx during the rolling restart: {failures[:10]}"

    expr = 'sum by (instance_id) (rate(http_server_requests_total{service="order-service"}[5s]))'
    wanted = {i.instance_id for i in cluster.instances_of("order-service")}
    # The last instance restarted needs two scrapes inside the 5 s window before its rate
    # has a value (scrapes every 1 s; on a loaded machine a scrape can slip a second).
    wait_for(
        lambda: {s["metric"]["instance_id"] for s in query(cluster, expr)} == wanted,
        15,
        f"a request rate for every order-service instance ({sorted(wanted)})",
    )
    params = urllib.parse.urlencode(
        {"g0.expr": expr, "g0.tab": "0", "g0.range_input": "1m", "g0.stacked": "0"}
    )
    with chromium() as browser:
        browser.get(f"{cluster.prometheus_url}/classic/graph?{params}")  # Debian: classic UI
        wait_for(
            lambda: (
                "order-service" in browser.page_source
                and browser.find_elements("css selector", "canvas, svg, .graph")
            ),
            30,
            "Prometheus' graph to render",
        )
        time.sleep(1)  # let the chart finish drawing
        shot = screenshot(browser, "prometheus-order-service-rate-rolling-restart")
    assert shot.stat().st_size > 10_000
