"""A gunicorn worker served by its master's relay follows discovery chains through it.

In one process, against a real agent: a master's ``ConsulSource`` behind a
``RelayServer``, and a worker's source that finds the relay (``CONSUL_DISCOVERY_RELAY``).
The worker's chain listener gets each new chain (compiled in the worker from the body
the master relays) while the worker starts no chain watch of its own; when the relay
goes, the worker watches the chain itself and still sees changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from consul_discovery.client.chain import ChainRouter
from consul_discovery.client.chain.model import SplitterNode
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.relay_protocol import RELAY_ENV
from consul_discovery.client.relay_server import RelayServer
from tests.discovery_client.chain.consul_chain import http, register, write_entry
from tests.discovery_client.chain.test_chain_watch_consul import set_split
from tests.harness.agent import ConsulAgent, running_agent

SERVICE = "relayed-web"


@pytest.fixture(scope="module")
def agent() -> Iterator[ConsulAgent]:
    with running_agent(name="relay-chains") as consul:
        write_entry(consul, http(SERVICE))
        for n, version in ((1, "1"), (2, "2")):
            register(consul, SERVICE, f"{SERVICE}-{n}", 20000 + n, meta={"version": version})
        yield consul


def v1_weight(router: ChainRouter) -> float | None:
    """The v1 leg's weight of the chain's splitter (None: no splitter)."""
    chain = router.chain
    if chain is None:
        return None
    start = chain.nodes[chain.start_node]  # a resolver while the splitter is not written yet
    if not isinstance(start, SplitterNode) or not start.splits:
        return None
    return start.splits[0].weight


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_a_relayed_worker_follows_a_chain_through_its_master(agent, monkeypatch):
    master = ConsulSource(agent.address, relay=False)
    server = RelayServer(master).start()  # the system temp: a tmp_path is too long a socket path
    monkeypatch.setenv(RELAY_ENV, str(server.path))
    worker = ConsulSource(agent.address)
    seen: list[ChainRouter] = []
    try:
        assert worker.resolve(SERVICE, timeout=10).instances  # through the relay
        assert worker.relayed
        worker.watch_chain(SERVICE, seen.append)
        set_split(agent, SERVICE, 90)
        wait_for(lambda: seen and v1_weight(seen[-1]) == 90, 10, "the 90/10 chain")
        set_split(agent, SERVICE, 20)
        wait_for(lambda: v1_weight(seen[-1]) == 20, 10, "the 20/80 chain")
        # The master watched the chain; the worker compiled the body it relayed.
        assert master.chain_body(SERVICE) is not None
        assert worker.chain_body(SERVICE) is None  # no chain watch of its own
        assert seen[-1].service == SERVICE and not seen[-1].problems

        server.close()  # the master goes: the worker follows the chain by itself
        wait_for(lambda: not worker.relayed, 10, "the worker to notice the relay went")
        set_split(agent, SERVICE, 60)
        wait_for(lambda: v1_weight(seen[-1]) == 60, 15, "the 60/40 chain, watched directly")
        assert worker.chain_body(SERVICE) is not None
    finally:
        worker.close()
        server.close()
