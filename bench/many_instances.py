"""7. Keep-alive over many instances: round robin over 50 real loopback HTTP servers.

A ServiceClient balancing round robin over N instances (bench/multiport.py: real
HTTP/1.1 servers on N ports, in one process) sends R requests after a warm-up round;
the servers count new TCP connections. Reuse = 1 - connections / requests. With
requests' default pool manager (an LRU of 8-10 pools) every call past 8 instances
evicted a pool and opened a new connection; discovery_client/pool.py keeps one per
instance in rotation. The naive row shows a plain ``HTTPAdapter(pool_connections=8)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from bench.multiport import MultiPortServer
from bench.result import Chart, Result, at_least
from bench.static_source import StaticSource
from consul_discovery.client import ServiceClient, ServiceConfig


@dataclass(frozen=True, slots=True)
class Params:
    """How many instances and timed requests."""

    instances: int = 50
    requests: int = 5000


FULL = Params()
QUICK = Params(instances=50, requests=500)


def reuse(server: MultiPortServer, session: requests.Session | None, n: int) -> dict[str, float]:
    """Round robin ``n`` requests after a warm-up round; connections, requests, reuse %."""
    client = ServiceClient(
        source=StaticSource({"svc": server.ports}),
        default_config=ServiceConfig(policy="round_robin"),
        session=session,
    )
    with client:
        for _ in range(len(server.ports)):
            client.get("svc", "/").raise_for_status()
        server.reset()
        started = time.perf_counter()
        for _ in range(n):
            client.get("svc", "/").raise_for_status()
        elapsed = time.perf_counter() - started
    if session is not None:
        session.close()
    connections, served = server.connections, server.requests
    return {
        "connections": connections,
        "requests": served,
        "reuse_pct": 100.0 * (1 - connections / served) if served else 0.0,
        "req_per_s": n / elapsed,
    }


def naive_session() -> requests.Session:
    """What the client used to build: an 8-pool LRU."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
    session.mount("http://", adapter)
    return session


def measure(instances: int, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """(ours, naive) figures over ``instances`` servers."""
    with MultiPortServer(instances) as server:
        ours = reuse(server, None, n)
        naive = reuse(server, naive_session(), n)
    return ours, naive


def run(p: Params) -> Result:
    """Measure reuse for our client and for the 8-pool adapter."""
    ours, naive = measure(p.instances, p.requests)
    rows = [
        {"client": "ServiceClient (pool per instance)", "instances": p.instances, **ours},
        {"client": "HTTPAdapter(pool_connections=8)", "instances": p.instances, **naive},
    ]
    return Result(
        name="many_instances",
        title=f"Keep-alive reuse, round robin over {p.instances} instances",
        rows=rows,
        checks=[at_least("connection reuse", ours["reuse_pct"], 99.0, "%")],
        charts=[
            Chart(
                "connection reuse by client",
                "% requests on a reused connection",
                ("reuse",),
                {"ours": [ours["reuse_pct"]], "8-pool LRU": [naive["reuse_pct"]]},
            )
        ],
    )
