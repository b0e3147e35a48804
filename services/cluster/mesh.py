"""The example platform in Consul's mesh (``MESH=1``): who may call whom, and how each
instance is told to serve and call.

With the mesh on, every service in ``plan.MESH_SERVICES`` (all but the gateway) serves
Connect-native mTLS only (``SERVICE_CONNECT=native``: a TTL check fed from inside, no
plain listener), and every instance's discovery client calls its upstreams through the
mesh (``DISCOVERY_CONNECT=1``, read by ``services.common.discovery``) with its own
identity, the leaf of its ``SERVICE_NAME``: the gateway's is ``gateway``.

``EDGES`` is the platform's call graph and the one list of what the mesh allows: `up`
writes an ``allow`` intention for each edge (and for Prometheus' scrapes, as
``prometheus``), then ``* -> *`` deny, so anything else is refused (the dev agent's own
default would allow it). The allows go first: no moment denies a call the platform makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from consul_discovery.connection import ConsulConnection
from consul_discovery.mesh.intentions_cli import set_intention
from services.cluster.plan import MESH_SERVICES, ClusterPlan, InstancePlan
from services.cluster.secure import PROMETHEUS_IDENTITY

#: The identity Prometheus scrapes the mesh instances with (``services.cluster.scrape_identity``).
PROMETHEUS = PROMETHEUS_IDENTITY

#: (caller, destination) for every call one service makes to another, from the code:
#: the gateway's routes (``services/gateway/routes.py``: user-, order- and
#: inventory-service), order-service's token check (``order_service/users.py``) and
#: reservations (``order_service/inventory.py``). user- and inventory-service call no one.
EDGES: tuple[tuple[str, str], ...] = (
    ("gateway", "user-service"),
    ("gateway", "order-service"),
    ("gateway", "inventory-service"),
    ("order-service", "user-service"),
    ("order-service", "inventory-service"),
)


@dataclass(frozen=True, slots=True)
class Intention:
    """One L4 intention: ``source`` may (``allow``) or may not (``deny``) call ``destination``."""

    source: str
    destination: str
    action: str


def intentions() -> list[Intention]:
    """What `up` writes, in order: every edge and Prometheus' scrapes allowed, then
    ``* -> *`` denied (the default for anything no allow names)."""
    allowed = [Intention(src, dst, "allow") for src, dst in EDGES]
    allowed += [Intention(PROMETHEUS, dst, "allow") for dst in sorted(MESH_SERVICES)]
    return [*allowed, Intention("*", "*", "deny")]


def write_intentions(conn: ConsulConnection) -> list[Intention]:
    """Write ``intentions()`` through ``conn`` (its token needs ``intention:write``);
    returns them. Raises ``IntentionsCliError`` naming a refusal."""
    written = intentions()
    for intention in written:
        set_intention(conn, intention.source, intention.destination, intention.action)
    return written


def instance_env(plan: ClusterPlan, inst: InstancePlan) -> dict[str, str]:
    """The mesh's settings for one instance, over the plain ones (empty with MESH off).

    A mesh service registers Connect-native with a TTL check (``SERVICE_CHECK`` unset:
    an HTTP check cannot pass the mTLS listener); every instance calls through the mesh.
    """
    if not plan.mesh:
        return {}
    env = {"DISCOVERY_CONNECT": "1"}
    if plan.in_mesh(inst.service):
        env["SERVICE_CONNECT"] = "native"
    return env
