"""The discovery chain watched with blocking queries, against a real agent."""

from __future__ import annotations

import random
import threading
import time

import requests

from consul_discovery.client.chain import (
    ChainAnswer,
    DiscoveryChainQuery,
)
from consul_discovery.connection.blocking import next_index
from tests.discovery_client.chain.consul_chain import (
    http,
    write_entry,
)


def test_the_chain_is_watched_with_blocking_queries(chain_agent):
    """The sans-IO query driven by a small loop (until the watch engine drives it):
    a blocking read waits while nothing changes, and returns soon after an entry write."""
    name = "watched"
    write_entry(chain_agent, http(name))
    set_split(chain_agent, name, 100)
    query = DiscoveryChainQuery(name, random=random.Random(1).random)
    session = requests.Session()

    def get(index: int, wait: float) -> ChainAnswer:
        req = query.request(index, wait)
        response = session.get(f"{chain_agent.url}{req.path}", params=req.params, timeout=wait + 5)
        return query.interpret(response.status_code, response.headers, response.content)

    first = get(0, 1.0)
    index = next_index(0, first.index)
    started = time.monotonic()
    idle = get(index, 0.5)  # nothing changes: Consul holds the request for the wait
    assert time.monotonic() - started >= 0.4 and idle.index == first.index

    seen: list[tuple[float, float]] = []  # (when, v1 weight) per chain delivered
    stop = threading.Event()

    def watch() -> None:
        at = index
        while not stop.is_set():
            answer = get(at, 2.0)
            at = next_index(at, answer.index)
            splits = answer.chain.nodes[answer.chain.start_node].splits
            seen.append((time.monotonic(), splits[0].weight))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    delays = []
    try:
        for weight in (0, 100, 10, 90, 50, 0, 100, 30, 70, 100):
            time.sleep(0.05)
            written = time.monotonic()
            set_split(chain_agent, name, weight)
            deadline = written + 5
            while time.monotonic() < deadline and not any(
                w == weight and t >= written for t, w in seen
            ):
                time.sleep(0.002)
            when = next((t for t, w in seen if w == weight and t >= written), None)
            assert when is not None, f"the watch never saw weight {weight}"
            delays.append(when - written)
    finally:
        stop.set()
        set_split(chain_agent, name, 100)  # ends the thread's blocking read
        thread.join(timeout=10)
        session.close()
    assert not thread.is_alive()
    print(f"\nchain change -> watch: max {max(delays) * 1000:.1f} ms over {len(delays)} writes")
    assert max(delays) < 1.0, delays


def set_split(agent, name: str, v1_weight: float) -> None:
    """Service ``name`` split between its subsets v1 and v2."""
    write_entry(
        agent,
        {
            "Kind": "service-resolver",
            "Name": name,
            "DefaultSubset": "v1",
            "Subsets": {
                "v1": {"Filter": 'Service.Meta.version == "1"'},
                "v2": {"Filter": 'Service.Meta.version == "2"'},
            },
        },
    )
    write_entry(
        agent,
        {
            "Kind": "service-splitter",
            "Name": name,
            "Splits": [
                {"Weight": v1_weight, "ServiceSubset": "v1"},
                {"Weight": 100 - v1_weight, "ServiceSubset": "v2"},
            ],
        },
    )
