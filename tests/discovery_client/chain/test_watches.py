"""ChainWatches when Consul cannot list its config entries: no call waits for a chain."""

from __future__ import annotations

from typing import Any

from consul_discovery.client.chain.watches import NAMES, ChainWatches
from consul_discovery.client.health_query import QueryOptions
from consul_discovery.connection.blocking import WatchTiming


class Started:
    """A watch ``start`` hands back: nothing runs (the test drives the state itself)."""

    async def aclose(self) -> None:
        """Nothing to stop."""


def test_a_names_watch_failing_before_its_first_answer_releases_every_waiting_service():
    states: dict[str, Any] = {}

    def start(state: Any, name: str) -> Started:
        states[name] = state
        return Started()

    watches = ChainWatches("127.0.0.1:1", start, timing=WatchTiming(), options=QueryOptions())
    web: list[Any] = []
    watches.watch("web", web.append)
    assert web == [] and list(states) == [NAMES]  # waiting for the entries' names
    states[NAMES].on_error(ConnectionRefusedError("connection refused"))
    assert [router.plain for router in web] == [True]  # called plainly, not held
    api: list[Any] = []
    watches.watch("api", api.append)  # a service asked for later: not held either
    assert [router.plain for router in api] == [True]
    states[NAMES].on_error(ConnectionRefusedError("connection refused"))
    assert len(web) == 1 and len(api) == 1  # told once, not on every failed poll
