"""Traffic management by Consul's compiled chain: cost per call, splitter share, weight change.

1. Cost per call of routing: ``DiscoveryCore.route`` (with the call's ``RequestView``
   made, as a shell does), timed alone with ``perf_counter_ns`` as ``pick_cost`` times a
   pick, for a service with no chain (the plain path) and for one whose chain has a
   router (a header route, a prefix route), a 90/10 splitter and two subsets.
2. The splitter's share: calls through ``ServiceClient`` to a service split 90/10
   between subsets v1 and v2 (in-process HTTP instances, a real agent).
3. A weight change: the splitter entry rewritten (10 times, alternating); the time from
   sending the write to the client core routing by the new weights (the write's own
   round trip included: Consul may answer the watch before the PUT).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from requests.structures import CaseInsensitiveDict

from bench.env import consul_agent
from bench.result import Chart, Result, at_most, summary
from consul_discovery.client.chain import compile_chain, parse_chain
from consul_discovery.client.chain.model import SplitterNode
from consul_discovery.client.client import ServiceClient
from consul_discovery.client.core import DiscoveryCore
from consul_discovery.client.route import RequestView
from tests.discovery_client.chain.chains import canary_chain

SERVICE = "split"


@dataclass(frozen=True, slots=True)
class Params:
    """How many timed routes, split calls and weight changes."""

    routes: int = 20_000
    split_calls: int = 5_000
    changes: int = 10


FULL = Params()
QUICK = Params(routes=2_000, split_calls=500, changes=3)


class _Quiet:
    def subscribe(self, _target: object, _listener: object) -> None:
        """Nothing to deliver: routing only."""


def time_routes(route: object, make: object, count: int) -> list[float]:
    """Seconds taken by each of ``count`` calls of ``route(make())`` (after a warm-up)."""
    clock = time.perf_counter_ns
    for _ in range(min(1000, count)):
        route(make())  # type: ignore[operator]
    samples = [0] * count
    for n in range(count):
        t0 = clock()
        route(make())  # type: ignore[operator]
        samples[n] = clock() - t0
    return [s / 1e9 for s in samples]


def route_costs(p: Params) -> dict[str, dict[str, float]]:
    """p50/p99 (µs) of routing a call: plain, and by the canary chain."""
    core = DiscoveryCore(_Quiet(), rng=random.Random(1))
    router = compile_chain(parse_chain(canary_chain()), random=random.Random(2).random)
    core.route("plain")
    core.route("web")
    core._on_chain("web", router)  # as the source's chain watch delivers it
    headers = CaseInsensitiveDict({"Accept": "*/*", "User-Agent": "bench"})
    out = {}
    for label, service, path in (
        ("plain", "plain", "/api/orders"),
        ("chain: prefix route, split", "web", "/api/orders"),
        ("chain: default route, split", "web", "/orders"),
    ):

        def make(path: str = path) -> RequestView:
            return RequestView("GET", path, headers)

        def route(view: RequestView, service: str = service) -> object:
            return core.route(service, view)

        out[label] = summary(time_routes(route, make, p.routes), scale=1e6)
    return out


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"version": self.server.version}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def _put(url: str, entry: dict) -> None:
    requests.put(f"{url}/v1/config", json=entry, timeout=5).raise_for_status()


def _split(url: str, v1: float) -> None:
    legs = [{"Weight": v1, "ServiceSubset": "v1"}, {"Weight": 100 - v1, "ServiceSubset": "v2"}]
    _put(url, {"Kind": "service-splitter", "Name": SERVICE, "Splits": legs})


def _weights(core: DiscoveryCore) -> tuple[float, ...] | None:
    router = core.chain(SERVICE)
    if router is None or router.chain is None:
        return None
    node = next(n for n in router.chain.nodes.values() if isinstance(n, SplitterNode))
    return tuple(s.weight for s in node.splits)


def split_and_change(p: Params) -> tuple[float, list[float]]:
    """The v2 share over ``split_calls`` calls, and each weight change's delay (s)."""
    servers = []
    with consul_agent() as agent:
        url = agent.url
        try:
            for n, version in enumerate(("1", "1", "2")):
                server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
                server.daemon_threads = True
                server.version = version  # type: ignore[attr-defined]
                threading.Thread(target=server.serve_forever, daemon=True).start()
                servers.append(server)
                requests.put(f"{url}/v1/agent/service/register", timeout=5, json={
                    "ID": f"{SERVICE}-{n}", "Name": SERVICE, "Address": "127.0.0.1",
                    "Port": server.server_address[1], "Meta": {"version": version},
                }).raise_for_status()  # fmt: skip
            _put(url, {"Kind": "service-defaults", "Name": SERVICE, "Protocol": "http"})
            _put(url, {"Kind": "service-resolver", "Name": SERVICE, "DefaultSubset": "v1",
                       "Subsets": {"v1": {"Filter": 'Service.Meta.version == "1"'},
                                   "v2": {"Filter": 'Service.Meta.version == "2"'}}})  # fmt: skip
            _split(url, 90)
            with ServiceClient(url) as client:
                deadline = time.monotonic() + 20
                while _weights(client.core) != (90, 10):
                    assert time.monotonic() < deadline, "the chain never reached the client"
                    client.get(SERVICE, "/")
                    time.sleep(0.01)
                versions = Counter(
                    client.get(SERVICE, "/").json()["version"] for _ in range(p.split_calls)
                )
                share = versions["2"] / p.split_calls
                delays = []
                for n in range(p.changes):
                    v1 = 0 if n % 2 == 0 else 90
                    written = time.perf_counter()  # from the write's start: Consul may
                    _split(url, v1)  # hand the watch its answer before the PUT's own
                    while _weights(client.core) != (v1, 100 - v1):
                        assert time.perf_counter() - written < 10, "a weight change was lost"
                        time.sleep(0.0005)
                    delays.append(time.perf_counter() - written)
                    time.sleep(0.1)
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()
    return share, delays


def run(p: Params) -> Result:
    """Route costs, the splitter's share and the weight-change delays."""
    costs = route_costs(p)
    rows = [
        {"measure": f"route a call, {label}", "p50_us": s["p50"], "p99_us": s["p99"], "n": s["n"]}
        for label, s in costs.items()
    ]
    extra = max(costs[k]["p50"] for k in costs if k != "plain") - costs["plain"]["p50"]
    share, delays = split_and_change(p)
    change = summary(delays, scale=1e3)
    rows.append({"measure": f"v2 share at 90/10 over {p.split_calls} calls", "share": share})
    rows.append({"measure": "weight change: write -> routed by the client",
                 "p50_ms": change["p50"], "p99_ms": change["p99"], "n": change["n"]})  # fmt: skip
    return Result(
        name="chain_cost",
        title="Traffic management by the discovery chain",
        rows=rows,
        checks=[
            at_most("chain over plain, p50 per call", extra, 5, " µs"),
            at_most("v2 share's distance from 10%", abs(share - 0.10) * 100, 2, " pp"),
            at_most("weight change applied, p99", change["p99"], 100, " ms"),
        ],
        charts=[
            Chart(
                "Routing cost per call",
                "µs",
                ("p50", "p99"),
                {label: [s["p50"], s["p99"]] for label, s in costs.items()},
            )
        ],
    )
