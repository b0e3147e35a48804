"""The discovery chain watched with blocking queries, against a real agent."""

from __future__ import annotations

import random
import time

from consul_discovery.client.chain import ChainAnswer, ChainWatch, DiscoveryChainQuery
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.sending import SessionSender
from consul_discovery.connection.watch import WatchState
from consul_discovery.connection.watch_drivers import WatchThread, poll_once
from tests.discovery_client.chain.consul_chain import (
    http,
    write_entry,
)


def test_the_chain_is_watched_with_blocking_queries(chain_agent):
    """ChainWatch driven by the shared engine (WatchState + a watch thread): a blocking
    read waits while nothing changes, and a new chain arrives soon after an entry write."""
    name = "watched"
    write_entry(chain_agent, http(name))
    set_split(chain_agent, name, 100)
    query = DiscoveryChainQuery(name, random=random.Random(1).random)
    sender = SessionSender(chain_agent.connection())
    seen: list[tuple[float, float]] = []  # (when, v1 weight) per chain delivered

    def changed(answer: ChainAnswer) -> None:
        splits = answer.chain.nodes[answer.chain.start_node].splits
        seen.append((time.monotonic(), splits[0].weight))

    # A first poll by hand, then an idle blocking one: Consul holds it for the wait.
    probe = WatchState(ChainWatch(query, chain_agent.url), timing=WatchTiming(wait=0.5))
    poll_once(probe, sender)
    first = probe.value
    assert first is not None and first.chain is not None and probe.index > 0
    started = time.monotonic()
    poll_once(probe, sender)
    assert time.monotonic() - started >= 0.4 and probe.value.index == first.index

    state = WatchState(
        ChainWatch(query, chain_agent.url),
        changed,
        timing=WatchTiming(wait=2.0, min_interval=0.0),
    )
    watch = WatchThread(state, sender, name="chain-watch-test").start()
    assert state.wait_first(5.0) and state.value is not None
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
        watch.stop()
        sender.interrupt()
        watch.join(timeout=10)
        sender.close()
    assert state.requests >= len(delays) and state.errors == 0
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
