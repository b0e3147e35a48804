"""A resolver's ``SourceIP`` hash policy, end to end, through all three transports.

A real agent holds ``service-defaults`` (http) and a ``service-resolver`` with
``ring_hash`` hashing on the source IP only; four in-process HTTP instances answer with
who they are. A call made on behalf of a client address (``ServiceClient(...,
source_ip=)``, the httpx ``source_ip`` extension; the gateway passes its client's
``remote_addr``) sticks to one instance per address, and different addresses spread
over the instances. The address is never sent upstream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import requests

from consul_discovery.client.client import ServiceClient
from consul_discovery.client.httpx_transport import (
    SOURCE_IP_EXTENSION,
    AsyncDiscoveryTransport,
    DiscoveryTransport,
)
from tests.discovery_client.chain.consul_chain import write_entry
from tests.harness.agent import ConsulAgent

SERVICE = "sticky-ip"
INSTANCES = 4
ADDRESSES = [f"203.0.113.{n}" for n in range(1, 41)]


class _Who(BaseHTTPRequestHandler):
    """Answers every GET with the instance's id and every header it received."""

    def do_GET(self) -> None:
        body = json.dumps(
            {"instance": self.server.ident, "headers": dict(self.headers)}  # type: ignore[attr-defined]
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def sticky(chain_agent: ConsulAgent) -> Iterator[ConsulAgent]:
    """Four instances of SERVICE and a resolver hashing calls by their source IP."""
    servers = []
    for n in range(INSTANCES):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Who)
        server.daemon_threads = True
        server.ident = f"{SERVICE}-{n}"  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        body = {"ID": f"{SERVICE}-{n}", "Name": SERVICE, "Address": "127.0.0.1",
                "Port": server.server_address[1]}  # fmt: skip
        url = f"{chain_agent.url}/v1/agent/service/register"
        requests.put(url, json=body, timeout=5).raise_for_status()
    write_entry(chain_agent, {"Kind": "service-defaults", "Name": SERVICE, "Protocol": "http"})
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": SERVICE,
            "LoadBalancer": {"Policy": "ring_hash", "HashPolicies": [{"SourceIP": True}]},
        },
    )
    try:
        yield chain_agent
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for n in range(INSTANCES):
            requests.put(f"{chain_agent.url}/v1/agent/service/deregister/{SERVICE}-{n}", timeout=5)


Get = Callable[[str | None], dict]


@pytest.fixture(params=["requests", "httpx", "httpx-async"])
def get_as(request: pytest.FixtureRequest, sticky: ConsulAgent) -> Iterator[tuple[Get, object]]:
    """``get(source_ip) -> answer`` through one transport, and its core."""
    if request.param == "requests":
        client = ServiceClient(sticky.url)

        def get(ip: str | None) -> dict:
            response = client.get(SERVICE, "/", source_ip=ip)
            assert response.status_code == 200, response.text
            return response.json()

        try:
            yield get, client.core
        finally:
            client.close()
    elif request.param == "httpx":
        sync = DiscoveryTransport(consul_addr=sticky.url, only=[SERVICE])
        with httpx.Client(transport=sync) as http:

            def get(ip: str | None) -> dict:
                extensions = {SOURCE_IP_EXTENSION: ip} if ip else {}
                response = http.get(f"http://{SERVICE}/", extensions=extensions)
                assert response.status_code == 200, response.text
                return response.json()

            yield get, sync.core
    else:
        loop = asyncio.new_event_loop()
        box: dict[str, object] = {}

        async def make() -> None:
            box["transport"] = AsyncDiscoveryTransport(sticky.url, only=[SERVICE])
            box["http"] = httpx.AsyncClient(transport=box["transport"])

        loop.run_until_complete(make())
        http: httpx.AsyncClient = box["http"]  # type: ignore[assignment]

        def get(ip: str | None) -> dict:
            async def one() -> dict:
                extensions = {SOURCE_IP_EXTENSION: ip} if ip else {}
                response = await http.get(f"http://{SERVICE}/", extensions=extensions)
                assert response.status_code == 200, response.text
                return response.json()

            return loop.run_until_complete(one())

        try:
            yield get, box["transport"].core  # type: ignore[attr-defined]
        finally:
            loop.run_until_complete(http.aclose())
            loop.close()


def test_calls_stick_to_an_instance_per_source_ip(get_as: tuple[Get, object]) -> None:
    get, core = get_as
    deadline = time.monotonic() + 10
    while core.chain(SERVICE) is None:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the chain was never installed"
        get(None)
        time.sleep(0.02)
    owner: dict[str, str] = {}
    for _round in range(3):
        for ip in ADDRESSES:
            answer = get(ip)
            assert owner.setdefault(ip, answer["instance"]) == answer["instance"], ip
            assert ip not in json.dumps(answer["headers"])  # never sent upstream
    spread = Counter(owner.values())
    assert len(spread) == INSTANCES, spread  # 40 addresses over 4 instances: each gets some
    assert max(spread.values()) <= 25, spread
