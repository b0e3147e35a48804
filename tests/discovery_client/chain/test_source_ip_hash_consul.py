"""A resolver's ``SourceIP`` hash policy, end to end, through all three transports.

A real agent holds ``service-defaults`` (http) and a ``service-resolver`` with
``ring_hash`` hashing on the source IP only; four in-process HTTP instances answer with
who they are. A call made on behalf of a client address (``ServiceClient(...,
source_ip=)``, the httpx ``source_ip`` extension; the gateway passes its client's
``remote_addr``) sticks to one instance per address, and different addresses spread
over the instances. The address is never sent upstream.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.discovery_client.chain.consul_chain import http, register, stop_instances, write_entry
from tests.discovery_client.chain.transports import TRANSPORTS, Calling, calling, serve_json
from tests.harness.agent import ConsulAgent

SERVICE = "sticky-ip"
INSTANCES = 4
ADDRESSES = [f"203.0.113.{n}" for n in range(1, 41)]


def _who(handler: BaseHTTPRequestHandler) -> dict:
    """The instance's id and every header it received."""
    return {"instance": handler.server.ident, "headers": dict(handler.headers)}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def sticky(chain_agent: ConsulAgent) -> Iterator[ConsulAgent]:
    """Four instances of SERVICE and a resolver hashing calls by their source IP."""
    servers = []
    for n in range(INSTANCES):
        server = serve_json(_who, ident=f"{SERVICE}-{n}")
        servers.append(server)
        register(chain_agent, SERVICE, f"{SERVICE}-{n}", server.server_address[1])
    write_entry(chain_agent, http(SERVICE))
    hashing = {"Policy": "ring_hash", "HashPolicies": [{"SourceIP": True}]}
    write_entry(chain_agent, {"Kind": "service-resolver", "Name": SERVICE, "LoadBalancer": hashing})
    try:
        yield chain_agent
    finally:
        stop_instances(chain_agent, servers, (f"{SERVICE}-{n}" for n in range(INSTANCES)))


@pytest.fixture(params=TRANSPORTS)
def through(request: pytest.FixtureRequest, sticky: ConsulAgent) -> Iterator[Calling]:
    """Calls to SERVICE through one transport (``tests.discovery_client.chain.transports``)."""
    with calling(request.param, sticky.url, SERVICE) as each:
        yield each


def test_calls_stick_to_an_instance_per_source_ip(through: Calling) -> None:
    through.until_chained(SERVICE)
    owner: dict[str, str] = {}
    for _round in range(3):
        for ip in ADDRESSES:
            answer = through.get("/", source_ip=ip)
            assert owner.setdefault(ip, answer["instance"]) == answer["instance"], ip
            assert ip not in json.dumps(answer["headers"])  # never sent upstream
    spread = Counter(owner.values())
    assert len(spread) == INSTANCES, spread  # 40 addresses over 4 instances: each gets some
    assert max(spread.values()) <= 25, spread
