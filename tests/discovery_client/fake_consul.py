"""A scripted Consul agent at the HTTP-value level, for unit tests of the sources' rules.

``FakeAgent`` answers our ``Request`` values with ``Response`` values (no sockets): the
health and catalog endpoints from a dict of entries, or a scripted failure. Both sources
take it as their ``send`` (``asend`` for AsyncConsulSource), so the real query building
and answer reading run. Integration tests use real agents instead (tests/harness).
"""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import unquote

from consul_discovery.client.instance import Instance
from consul_discovery.connection.exchange import (
    Request,
    Response,
    TransportError,
    TransportFailure,
)


def entry(
    ident: str,
    *statuses: str,
    address: str = "10.0.0.1",
    node_address: str = "10.9.9.9",
    port: int = 8080,
    weights: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One /v1/health/service entry of service ``web``, one check per status."""
    return {
        "Node": {"Node": "node-1", "Address": node_address, "Datacenter": "dc1"},
        "Service": {
            "ID": ident, "Service": "web", "Address": address, "Port": port,
            "Tags": ["v2"], "Meta": {"version": "1.4"},
            "Weights": weights or {"Passing": 3, "Warning": 1},
        },
        "Checks": [{"CheckID": f"c{n}", "Status": s} for n, s in enumerate(statuses)],
    }  # fmt: skip


def entry_of(inst: Instance) -> dict[str, Any]:
    """The health entry Consul would give for ``inst`` (inverse of instance_from_entry)."""
    checks = [{"CheckID": "serfHealth", "Status": inst.health}]
    if inst.maintenance:
        checks.append({"CheckID": f"_service_maintenance:{inst.id}", "Status": "critical"})
    return {
        "Node": {"Node": inst.node or "node-1", "Address": inst.address, "Datacenter": "dc1"},
        "Service": {
            "ID": inst.id, "Service": inst.service, "Address": inst.address, "Port": inst.port,
            "Tags": list(inst.tags), "Meta": dict(inst.meta),
            "Weights": {"Passing": inst.weight_passing, "Warning": inst.weight_warning},
        },
        "Checks": checks,
    }  # fmt: skip


def health_response(
    index: int | None, instances: list[Instance], headers: dict[str, str] | None = None
) -> Response:
    """A 200 health answer with ``instances`` at ``index`` (None: no index header)."""
    head = {} if index is None else {"X-Consul-Index": str(index)}
    body = json.dumps([entry_of(i) for i in instances]).encode()
    return Response(200, {**head, **(headers or {})}, body)


REFUSED = TransportError(TransportFailure.REFUSED, "Connection refused")


class FakeAgent:
    """Answers health and catalog requests from ``services``; ``error`` (a TransportError
    to raise or a Response to give) replaces every answer while set."""

    def __init__(self, services: dict[str, list[dict[str, Any]]]) -> None:
        self.services = services
        self.catalog_names = set(services)
        self.index = 7
        self.headers: dict[str, str] = {}
        self.error: BaseException | Response | None = None
        self.block: threading.Event | None = None  # while set to an unset event: hang
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
        if self.block is not None:
            self.block.wait(10)
        if isinstance(self.error, BaseException):
            raise self.error
        if isinstance(self.error, Response):
            return self.error
        head = {"X-Consul-Index": str(self.index), **self.headers}
        if request.path.startswith("/v1/health/"):
            name = unquote(request.path.rsplit("/", 1)[1])
            return Response(200, head, json.dumps(self.services.get(name, [])).encode())
        if request.path == "/v1/catalog/services":
            body = json.dumps({n: [] for n in sorted(self.catalog_names)}).encode()
            return Response(200, head, body)
        return Response(404, head, b"not found")

    async def asend(self, request: Request) -> Response:
        """The same, as an awaitable send (AsyncConsulSource); ``block`` is not honoured."""
        return self(request)

    def health_requests(self) -> list[Request]:
        """Every health query received, in order."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/health/")]

    def params(self, n: int) -> dict[str, str]:
        """The query parameters of the ``n``-th health query."""
        return dict(self.health_requests()[n].params)
