"""The real Consul agent: the pinned build runs, serves the v1 APIs and the web UI."""

from __future__ import annotations

import subprocess
import time

import requests

from tests.harness.agent import ConsulAgent
from tests.harness.binary import ENSURE_CONSUL, REPO_ROOT, consul_binary


def pinned_version() -> str:
    return (REPO_ROOT / "consul" / "VERSION").read_text().strip()


def test_binary_reports_a_release_version() -> None:
    out = subprocess.run(
        [consul_binary(), "version"], check=True, capture_output=True, text=True
    ).stdout
    first = out.splitlines()[0]
    assert first.startswith("Consul v"), out
    assert "-dev" not in first, f"expected a release build, got {first!r}"


def test_ensure_consul_is_fast_once_built() -> None:
    started = time.monotonic()
    out = subprocess.run(
        [str(ENSURE_CONSUL)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    elapsed = time.monotonic() - started
    assert out.strip().splitlines()[-1], "ensure-consul printed no path"
    assert elapsed < 10, f"second ensure-consul took {elapsed:.1f}s; the build cache is not used"


def test_registered_service_is_read_back_from_health_passing(consul_agent: ConsulAgent) -> None:
    client = consul_agent.client()
    client.agent.service.register(
        "inventory",
        service_id="inventory-1",
        address="127.0.0.1",
        port=9999,
        tags=["v1"],
        check={"CheckID": "inventory-1-ttl", "Name": "ttl", "TTL": "30s", "Status": "passing"},
    )
    deadline = time.monotonic() + 10
    entries: list[dict] = []
    while time.monotonic() < deadline:
        entries = requests.get(
            f"{consul_agent.url}/v1/health/service/inventory", params={"passing": "1"}, timeout=5
        ).json()
        if entries:
            break
        time.sleep(0.1)
    assert [e["Service"]["ID"] for e in entries] == ["inventory-1"]
    assert entries[0]["Service"]["Port"] == 9999
    assert entries[0]["Service"]["Tags"] == ["v1"]


def test_failing_service_is_not_in_the_passing_set(consul_agent: ConsulAgent) -> None:
    client = consul_agent.client()
    client.agent.service.register(
        "billing",
        service_id="billing-1",
        address="127.0.0.1",
        port=9998,
        check={"CheckID": "billing-1-ttl", "Name": "ttl", "TTL": "30s", "Status": "critical"},
    )
    url = f"{consul_agent.url}/v1/health/service/billing"
    assert requests.get(url, timeout=5).json(), "service should be registered"
    assert requests.get(url, params={"passing": "1"}, timeout=5).json() == []


def test_web_ui_is_served(consul_agent: ConsulAgent) -> None:
    response = requests.get(f"{consul_agent.url}/ui/", timeout=5)
    assert response.status_code == 200
    assert "text/html" in response.headers["Content-Type"]
    assert "consul-ui" in response.text, response.text[:500]


def test_agent_reports_pinned_version(consul_agent: ConsulAgent) -> None:
    config = requests.get(f"{consul_agent.url}/v1/agent/self", timeout=5).json()["Config"]
    if f"/consul-{pinned_version()}/" in consul_binary():  # the pinned build, not a PATH one
        assert config["Version"] == pinned_version()
    assert config["Datacenter"] == "dc1"


def test_restart_loses_dev_state_and_keeps_ports(consul_agent: ConsulAgent) -> None:
    client = consul_agent.client()
    client.agent.service.register("ephemeral", service_id="ephemeral-1", port=1234)
    assert "ephemeral" in client.catalog.services()[1] or "ephemeral" in client.agent.services()
    old_pid = consul_agent.pid
    consul_agent.restart()
    assert consul_agent.pid != old_pid
    assert "ephemeral" not in consul_agent.client().agent.services()
