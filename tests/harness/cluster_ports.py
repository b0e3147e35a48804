"""A test cluster's ports: one block of 100 in this worker's share, checked free.

The layout (from the block's first port): the gateway, user-service from +10,
order-service from +40, inventory-service from +70, Consul's ports at +90..+96 and
Prometheus at +98. Every profile's test plans use it, so that no two of a worker's
clusters, and no other worker's ports, can overlap (``consul_discovery.testing.ports``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.cluster import control
from services.cluster.plan import ClusterPlan, ConsulPorts
from tests.harness.ports import block_bases

BLOCK = 100


def block_layout(base: int) -> dict[str, Any]:
    """A plan's port settings for the block from ``base``."""
    consul = ConsulPorts(
        http=base + 90, dns=base + 91, serf_lan=base + 92, serf_wan=base + 93,
        server=base + 94, grpc=base + 95, https=base + 96,
    )  # fmt: skip
    return {
        "consul": consul,
        "gateway_port": base,
        "user_base_port": base + 10,
        "order_base_port": base + 40,
        "inventory_base_port": base + 70,
        "prometheus_port": base + 98,
    }


def free_cluster_plan(make: Callable[[dict[str, Any]], ClusterPlan], what: str) -> ClusterPlan:
    """The plan ``make`` builds from a block's layout whose every (address, port) is free."""
    for base in block_bases(BLOCK, step=BLOCK, attempts=100):
        plan = make(block_layout(base))
        if not control.busy_ports(plan.endpoints()):
            return plan
    raise RuntimeError(f"could not find free ports for a {what}")
