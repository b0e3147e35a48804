"""Consul's own web UI is the health view: checked in headless Chromium, with screenshots."""

from __future__ import annotations

import time

import pytest
import requests

from services.cluster import control
from services.cluster.plan import ClusterPlan
from tests.harness.browser import chromium, screenshot, wait_for_services_health
from tests.services.cluster.conftest import kill_group_and_wait

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_ui_shows_passing_services_then_a_failing_instance(small_cluster: ClusterPlan) -> None:
    plan = small_cluster
    with chromium() as browser:
        seen = wait_for_services_health(
            browser,
            plan.consul_ui_url,
            {
                "gateway": "passing",
                "user-service": "passing",
                "order-service": "passing",
                "inventory-service": "passing",  # FastAPI under uvicorn (registry.asgi)
            },
        )
        first = screenshot(browser, "consul-ui-all-passing")
        assert first.stat().st_size > 10_000
        assert seen["consul"] == "passing"

        victim = plan.instances_of("order-service")[0]
        pid = control.program_pid(plan, victim.program)
        assert pid is not None
        kill_group_and_wait(pid)
        _wait_for_critical(plan, victim.instance_id)

        wait_for_services_health(browser, plan.consul_ui_url, {"order-service": "critical"})
        browser.get(f"{plan.consul_ui_url.rstrip('/')}/dc1/services/order-service/instances")
        deadline = time.monotonic() + 20
        while victim.instance_id not in browser.page_source and time.monotonic() < deadline:
            time.sleep(0.3)
        assert victim.instance_id in browser.page_source
        second = screenshot(browser, "consul-ui-order-service-failing")
        assert second.stat().st_size > 10_000


def _wait_for_critical(plan: ClusterPlan, instance_id: str, timeout: float = 20.0) -> None:
    url = f"http://{plan.consul_address}/v1/health/checks/order-service"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checks = requests.get(url, timeout=5).json()
        if any(c["ServiceID"] == instance_id and c["Status"] == "critical" for c in checks):
            return
        time.sleep(0.2)
    raise AssertionError(f"{instance_id} never went critical in Consul")
