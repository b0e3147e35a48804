"""The 3-server loopback cluster elects a new leader when the leader is killed."""

from __future__ import annotations

import time

import pytest
import requests

from tests.harness.cluster import ConsulCluster


@pytest.mark.cluster
def test_leader_failover_keeps_catalog_readable(consul_cluster: ConsulCluster) -> None:
    first = consul_cluster.running()[0]
    assert len(consul_cluster.peers()) == 3
    first.client().agent.service.register("ledger", service_id="ledger-1", port=7000)
    assert _wait_for_catalog(first.url, "ledger")

    leader = consul_cluster.leader()
    assert leader is not None, "no leader among the servers"
    old_address = consul_cluster.leader_address()
    leader.kill()  # kill -9 by PID

    new_address = consul_cluster.wait_for_new_leader(old_address, timeout=30)
    assert new_address != old_address
    survivors = consul_cluster.running()
    assert len(survivors) == 2
    for server in survivors:
        services = requests.get(f"{server.url}/v1/catalog/services", timeout=5).json()
        assert "ledger" in services, f"{server.name} lost the catalog: {services}"


def _wait_for_catalog(url: str, service: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service in requests.get(f"{url}/v1/catalog/services", timeout=2).json():
            return True
        time.sleep(0.1)
    return False
