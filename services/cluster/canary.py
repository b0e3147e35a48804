"""The canary of `make demo`: Consul config entries steer order-service traffic, live.

order-service runs stable instances (``SERVICE_VERSION`` 1.0.0) and canaries (2.0.0, the
cluster's ``CANARIES``; both register it as meta ``version``). The demo writes, through
Consul's own config entries:

* ``service-defaults``: order-service speaks HTTP (routers and splitters need it);
* ``service-resolver``: subsets ``v1`` and ``v2`` by ``Service.Meta.version``;
* ``service-splitter``: 90% to v1, 10% to v2;
* ``service-router``: a request with ``X-Canary: 1`` goes to v2 whatever the split;

then sends GETs through the gateway, whose discovery client routes each one by the chain
Consul compiles, and counts which version answered from each instance's own request
counter (``/metrics``). The split changes live to 0/100 (promote) and back to 100/0
(roll back), then the entries are deleted, leaving the cluster as it was.

In the mesh (``MESH=1``) the counters of Connect-native instances are read over mTLS
with the ``prometheus`` identity, the one the intentions let read every service's
``/metrics`` (``services.cluster.mesh``); the gateway's calls go through the mesh.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import requests
from prometheus_client.parser import text_string_to_metric_families

from consul_discovery.connection import ConsulConnection
from consul_discovery.mesh.clients import MeshAdapter
from consul_discovery.mesh.errors import MeshError
from consul_discovery.mesh.service_identity import ServiceIdentity
from services.client import ClientError, PlatformClient
from services.cluster.plan import CANARY_VERSION, STABLE_VERSION

SERVICE = "order-service"
#: The route of ``GET /orders/<id>`` in the services' metrics starts so (its Flask rule).
ORDER_ROUTE = "/orders/<"
CANARY_HEADER = "X-Canary"
SUBSETS = {"v1": STABLE_VERSION, "v2": CANARY_VERSION}


class CanaryError(RuntimeError):
    """The canary could not run or did not route as its config entries say."""


@dataclass(frozen=True, slots=True)
class Served:
    """How many of a batch of calls each version answered."""

    v1: int
    v2: int

    @property
    def v2_share(self) -> float:
        """v2's share of the calls answered, 0..1."""
        total = self.v1 + self.v2
        return self.v2 / total if total else 0.0

    def __str__(self) -> str:
        return f"v1 {self.v1}, v2 {self.v2} (v2 {self.v2_share:.1%})"


def entries(v2_weight: float) -> list[dict[str, Any]]:
    """The config entries, in the order Consul accepts them (defaults first)."""
    subsets = {
        name: {"Filter": f'Service.Meta.version == "{version}"'}
        for name, version in SUBSETS.items()
    }
    match = {"HTTP": {"Header": [{"Name": CANARY_HEADER, "Exact": "1"}]}}
    return [
        {"Kind": "service-defaults", "Name": SERVICE, "Protocol": "http"},
        {"Kind": "service-resolver", "Name": SERVICE, "DefaultSubset": "v1", "Subsets": subsets},
        splitter(v2_weight),
        {
            "Kind": "service-router",
            "Name": SERVICE,
            "Routes": [{"Match": match, "Destination": {"ServiceSubset": "v2"}}],
        },
    ]


def splitter(v2_weight: float) -> dict[str, Any]:
    """The splitter sending ``v2_weight`` percent to v2, the rest to v1."""
    splits = [
        {"Weight": 100.0 - v2_weight, "ServiceSubset": "v1"},
        {"Weight": v2_weight, "ServiceSubset": "v2"},
    ]
    return {"Kind": "service-splitter", "Name": SERVICE, "Splits": splits}


class Canary:
    """The demo's view of the cluster: Consul (config entries, instances) and the gateway."""

    def __init__(
        self,
        conn: ConsulConnection,
        gateway_url: str,
        out: TextIO,
        identity: ServiceIdentity | None = None,
    ) -> None:
        self.conn = conn
        self.consul = conn.session()
        self.out = out
        self.client = PlatformClient.via_gateway(gateway_url)
        self.metrics = requests.Session()
        self.metrics.trust_env = False
        if identity is not None:  # Connect-native instances: /metrics over mTLS
            self.metrics.mount("https://", MeshAdapter(identity.client_tls, SERVICE))

    def say(self, line: str) -> None:
        """One line of the demo's output."""
        print(line, file=self.out, flush=True)

    def versions(self) -> dict[str, str]:
        """Each passing order-service instance's metrics URL -> its version."""
        answer = self.consul.get(
            f"{self.conn.base_url}/v1/health/service/{SERVICE}", params={"passing": 1}, timeout=5
        )
        answer.raise_for_status()
        found = {}
        for entry in answer.json():
            svc = entry["Service"]
            address = svc["Address"] or entry["Node"]["Address"]
            scheme = "https" if (svc.get("Connect") or {}).get("Native") else "http"
            found[f"{scheme}://{address}:{svc['Port']}/metrics"] = (svc.get("Meta") or {}).get(
                "version", ""
            )
        return found

    def put(self, entry: Mapping[str, Any]) -> None:
        """Write one config entry."""
        answer = self.consul.put(f"{self.conn.base_url}/v1/config", json=entry, timeout=5)
        if not answer.ok:
            raise CanaryError(f"writing {entry['Kind']} failed: {answer.status_code} {answer.text}")

    def delete(self, kind: str) -> None:
        """Delete order-service's config entry of ``kind`` (absent is fine)."""
        url = f"{self.conn.base_url}/v1/config/{kind}/{SERVICE}"
        self.consul.delete(url, timeout=5)

    def answered(self, urls: Mapping[str, str]) -> dict[str, int]:
        """Each version's ``GET /orders/<id>`` answers so far, from the instances' counters."""
        per_version = dict.fromkeys(SUBSETS.values(), 0)
        for url, version in urls.items():
            text = self.metrics.get(url, timeout=5).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = sample.labels
                    if (
                        sample.name == "http_server_requests_total"
                        and labels.get("route", "").startswith(ORDER_ROUTE)
                        and labels.get("method") == "GET"
                    ):
                        per_version[version] = per_version.get(version, 0) + int(sample.value)
        return per_version

    def send(self, order_id: int, calls: int, canary_header: bool = False) -> Served:
        """Send ``calls`` GETs of one order through the gateway; who answered them."""
        urls = self.versions()
        before = self.answered(urls)
        headers = {CANARY_HEADER: "1"} if canary_header else {}
        for _ in range(calls):
            self.client.get_order(order_id, headers=headers)
        after = self.answered(urls)
        return Served(
            after[STABLE_VERSION] - before[STABLE_VERSION],
            after[CANARY_VERSION] - before[CANARY_VERSION],
        )

    def until(
        self,
        order_id: int,
        holds: Callable[[Served], bool],
        what: str,
        timeout: float = 20.0,
        canary_header: bool = False,
    ) -> None:
        """Send small batches until one ``holds``: a chain change has reached the gateway."""
        deadline = time.monotonic() + timeout
        while not holds(self.send(order_id, 20, canary_header)):
            if time.monotonic() > deadline:
                raise CanaryError(f"{what}: not seen through the gateway within {timeout:.0f}s")


@contextmanager
def config_entries(canary: Canary, v2_weight: float) -> Iterator[None]:
    """The canary's config entries written, deleted afterwards (routers before defaults)."""
    try:
        for entry in entries(v2_weight):
            canary.put(entry)
        yield
    finally:
        for kind in ("service-router", "service-splitter", "service-resolver", "service-defaults"):
            canary.delete(kind)


def run_canary(conn: ConsulConnection, gateway_url: str, out: TextIO | None = None,
               calls: int = 200, identity: ServiceIdentity | None = None,
               ) -> dict[str, Served]:  # fmt: skip
    """Run the canary; return what each step measured (raises CanaryError if routing is
    not what the entries say). ``identity``: the mesh identity reading the counters of
    Connect-native instances."""
    canary = Canary(conn, gateway_url, out or sys.stdout, identity)
    versions = sorted(canary.versions().values())
    stable, canaries = versions.count(STABLE_VERSION), versions.count(CANARY_VERSION)
    if not stable or not canaries:
        raise CanaryError(
            f"{SERVICE} needs stable ({STABLE_VERSION}) and canary ({CANARY_VERSION}) "
            f"instances passing; found {stable} and {canaries}: "
            "make run-cluster CANARIES=1 (the dev profile's default)"
        )
    name = f"canary-{uuid.uuid4().hex[:8]}"
    canary.client.register(name, "a long enough password")
    canary.client.login(name, "a long enough password")
    order_id = int(canary.client.create_order([("canary", 1)])["id"])
    say = canary.say
    figures: dict[str, Served] = {}
    say(f"[canary] {SERVICE}: {stable} instance(s) of {STABLE_VERSION}, "
        f"{canaries} canary of {CANARY_VERSION}")  # fmt: skip
    say("[canary] write service-defaults (http), service-resolver (subsets v1, v2),")
    say(f"         service-splitter 90/10, service-router ({CANARY_HEADER}: 1 -> v2)")
    with config_entries(canary, v2_weight=10):
        # The router is in the same chain as the split: once it steers, the split is live.
        canary.until(order_id, lambda s: s.v1 == 0, "the router", 30, canary_header=True)
        figures["header"] = canary.send(order_id, 50, canary_header=True)
        say(f"      -> 50 GETs with {CANARY_HEADER}: 1: {figures['header']}")
        figures["90/10"] = canary.send(order_id, calls)
        say(f"      -> {calls} GETs: {figures['90/10']}")
        say("[canary] splitter changed live to 0/100 (promote v2)")
        canary.put(splitter(100))
        canary.until(order_id, lambda s: s.v1 == 0, "0/100")
        figures["0/100"] = canary.send(order_id, calls)
        say(f"      -> {calls} GETs: {figures['0/100']}")
        say("[canary] splitter changed live to 100/0 (roll back)")
        canary.put(splitter(0))
        canary.until(order_id, lambda s: s.v2 == 0, "100/0")
        figures["100/0"] = canary.send(order_id, calls)
        say(f"      -> {calls} GETs: {figures['100/0']}")
    say("[canary] config entries deleted: order-service is one service again")
    check(figures)
    say("canary OK")
    return figures


def check(figures: Mapping[str, Served]) -> None:
    """Raise CanaryError unless each step routed as its entries say."""
    if figures["header"].v1:
        raise CanaryError(f"{CANARY_HEADER}: 1 reached v1: {figures['header']}")
    share = figures["90/10"].v2_share
    if not 0.02 <= share <= 0.25:  # 10% of 200 calls: about 2 standard deviations wide
        raise CanaryError(f"90/10 sent {share:.1%} to v2")
    if figures["0/100"].v1 or figures["100/0"].v2:
        raise CanaryError(f"a full split leaked: {figures['0/100']}; {figures['100/0']}")


def main(conn: ConsulConnection, gateway_url: str, mesh: bool = False) -> int:
    """`make demo`'s canary step; the exit code. ``mesh``: the cluster runs MESH=1."""
    identity = None
    try:
        if mesh:  # imported here: services.cluster.mesh imports the plan, as we do
            from services.cluster.mesh import PROMETHEUS

            identity = ServiceIdentity(PROMETHEUS, conn).start().wait_ready(15)
        run_canary(conn, gateway_url, identity=identity)
    except (CanaryError, ClientError, MeshError, requests.RequestException) as exc:
        print(f"canary failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if identity is not None:
            identity.close()
    return 0
