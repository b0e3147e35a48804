"""8. A relayed dependency outage: user-service has no instance, orders keep coming.

Two real order-service apps (each on its own loopback HTTP server, in this process) whose
discovery client finds no user-service instance, so every ``POST /orders`` is answered
503 ``Failure-Origin: dependency`` (``Retry-After: 1``). A gateway-side ServiceClient
sends them open loop, with an Idempotency-Key (so the old rule retried them, slept on
Retry-After and ejected the instances). Measured: the latency of the 503s and how many
healthy order-service instances the client ejected. The same drill against a real
cluster is tests/services/cluster/test_dependency_outage.py.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import make_server

from bench.loadgen import run_open_loop
from bench.result import Chart, Result, at_most, summary
from bench.static_source import StaticSource
from consul_discovery.client import ServiceClient
from services.order_service import create_app as create_order_app


@dataclass(frozen=True, slots=True)
class Params:
    """Request rate and how long the outage lasts."""

    rate: float = 50.0
    seconds: float = 10.0
    order_instances: int = 2


FULL = Params()
QUICK = Params(rate=20.0, seconds=2.0)


@contextmanager
def order_instances(count: int, data_dir: Path) -> Iterator[list[int]]:
    """``count`` order-service apps whose user-service has no instance; yields ports."""
    users = ServiceClient(source=StaticSource({"user-service": []}), resolve_timeout=1.0)
    servers = []
    try:
        for _ in range(count):
            app = create_order_app(
                {
                    "REGISTRY_ENABLED": False,
                    "ORDER_DB_PATH": str(data_dir / "orders.sqlite3"),
                    "DISCOVERY_CLIENT": users,
                }
            )
            server = make_server("127.0.0.1", 0, app, threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        yield [s.server_port for s in servers]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        users.close()


def run(p: Params) -> Result:
    """Drive the outage and report the 503s' latency and the ejections."""
    for name in ("services", "werkzeug", "flask.app"):  # a line per 503 is not news here
        logging.getLogger(name).setLevel(logging.ERROR)
    with (
        tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp,
        order_instances(p.order_instances, Path(tmp)) as ports,
        ServiceClient(source=StaticSource({"order-service": ports})) as gateway,
    ):
        statuses: dict[int, int] = {}

        def call(seq: int) -> tuple[bool, str]:
            response = gateway.post(
                "order-service",
                "/orders",
                json={"items": [{"sku": "book", "quantity": 1}]},
                headers={"Authorization": "Bearer t", "Idempotency-Key": f"k-{seq}"},
            )
            statuses[seq] = response.status_code
            return response.status_code == 503, str(response.status_code)

        report = run_open_loop(call, rate=p.rate, duration=p.seconds)
        snap = gateway.stats().target("order-service")
    latencies = [o.latency for o in report.outcomes if o.ok]
    lat = summary(latencies, 1e3)
    ejections = snap.ejections
    rows = [
        {
            "requests": len(report.outcomes),
            "answered_503": len(latencies),
            "p50_ms": lat["p50"],
            "p99_ms": lat["p99"],
            "retries": snap.retries,
            "ejections": ejections,
        }
    ]
    return Result(
        name="dependency_outage",
        title="Relayed dependency outage: 503s and ejections of healthy instances",
        rows=rows,
        checks=[
            at_most("healthy instances ejected", ejections, 0),
            at_most("p99 of the relayed 503s", lat["p99"], 100, " ms"),
            at_most("requests not answered 503", len(report.outcomes) - len(latencies), 0),
        ],
        charts=[
            Chart(
                "latency of the relayed 503s",
                "ms",
                ("p50", "p99"),
                {"503 latency": [lat["p50"], lat["p99"]]},
            )
        ],
    )
