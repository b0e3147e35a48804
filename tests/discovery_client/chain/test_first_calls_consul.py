"""A process's first calls follow the chain already in Consul, through all three transports.

The service's resolver sends every call to its ``v2`` subset (one instance of four).
A new client used to call the plain service until the chain arrived, a few milliseconds
after Consul first answered for the service: its first calls went to the v1 instances
the resolver leaves out. Now a first call waits for the chain (chain/gate.py), and a
service no entry names is not held by it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from consul_discovery.client.client import ServiceClient
from consul_discovery.client.cold_start import target_key
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.instance import Instance
from consul_discovery.client.snapshot_store import SnapshotStore
from consul_discovery.client.source import WatchKey
from tests.discovery_client.chain.consul_chain import http, register, stop_instances, write_entry
from tests.discovery_client.chain.transports import TRANSPORTS, calling, echo, serve_json
from tests.harness.agent import ConsulAgent
from tests.harness.socket_server import closed_port

SERVICE = "first"
PLAIN = "first-plain"
INSTANCES = (("first-v1-a", "1"), ("first-v1-b", "1"), ("first-v1-c", "1"), ("first-v2", "2"))
CLIENTS = 4  # fresh clients per transport, each checked on its very first call


@pytest.fixture(scope="module")
def agent(chain_agent: ConsulAgent) -> Iterator[ConsulAgent]:
    """Four instances of SERVICE (one v2) and one of PLAIN; SERVICE's resolver: v2 only."""
    servers = []
    for ident, version in (*INSTANCES, (f"{PLAIN}-1", "1")):
        server = serve_json(echo, ident=ident, version=version)
        servers.append(server)
        name = PLAIN if ident.startswith(PLAIN) else SERVICE
        register(chain_agent, name, ident, server.server_address[1], meta={"version": version})
    write_entry(chain_agent, http(SERVICE))
    write_entry(
        chain_agent,
        {
            "Kind": "service-resolver",
            "Name": SERVICE,
            "DefaultSubset": "v2",
            "Subsets": {
                "v1": {"Filter": 'Service.Meta.version == "1"'},
                "v2": {"Filter": 'Service.Meta.version == "2"'},
            },
        },
    )
    try:
        yield chain_agent
    finally:
        stop_instances(
            chain_agent, servers, (ident for ident, _ in (*INSTANCES, (f"{PLAIN}-1", "1")))
        )


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_the_first_call_of_a_new_client_follows_the_chain(agent, kind):
    firsts = []
    for seed in range(CLIENTS):
        with calling(kind, agent.url, SERVICE, seed=seed) as through:
            first = through.get("/x")["instance"]
            firsts.append((first, through.core.chain(SERVICE) is not None))
    assert firsts == [("first-v2", True)] * CLIENTS, (
        f"(instance, chain installed) of each new client's first call: {firsts}"
    )


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_service_without_a_chain_is_not_held(agent, kind):
    with calling(kind, agent.url, PLAIN) as through:
        started = time.monotonic()
        assert through.get("/")["instance"] == f"{PLAIN}-1"
        took = time.monotonic() - started
        assert took < 1.0, f"the first call to a service with no chain took {took:.2f}s"
        assert not through.core.gates


def test_a_first_call_served_from_a_snapshot_is_not_held(tmp_path):
    """Consul unreachable at start, the set from the on-disk snapshot: no chain can be
    learnt, so the first call goes at once (plainly), not after the first wait."""
    server = serve_json(echo, ident="snap-1", version="1")
    try:
        port = server.server_address[1]
        saved = Instance("snap-1", "snapped", "127.0.0.1", port, node="n1", datacenter="dc1")
        key = WatchKey.of("snapped", lambda _n: ServiceConfig())
        SnapshotStore(tmp_path).save("snapped", target_key(key), 7, (saved,))
        source = ConsulSource(f"127.0.0.1:{closed_port()}", snapshots=SnapshotStore(tmp_path))
        try:
            with ServiceClient(source=source) as client:
                started = time.monotonic()
                assert client.get("snapped", "/").json()["instance"] == "snap-1"
                took = time.monotonic() - started
                assert took < 1.0, f"the first call from a snapshot took {took:.2f}s"
        finally:
            source.close()
    finally:
        server.shutdown()
        server.server_close()
