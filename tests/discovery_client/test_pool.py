"""Connection pools per instance: keep-alive survives round robin over 50 instances."""

from __future__ import annotations

from unittest import mock

import pytest

from bench.many_instances import measure
from consul_discovery.client.pool import InstancePools
from tests.discovery_client.fakes import FakeClock


def test_round_robin_over_50_real_servers_reuses_connections() -> None:
    ours, naive = measure(instances=50, n=1000)
    assert ours["requests"] == 1000
    assert ours["reuse_pct"] >= 99.0, ours
    assert naive["reuse_pct"] < 50.0, naive  # the old 8-pool LRU: the test can fail


def test_pools_grow_while_in_use_and_evict_only_idle_ones() -> None:
    clock = FakeClock()
    pools = InstancePools(2, max_pools=8, idle_after=60.0, clock=clock)
    made = {key: mock.Mock(name=key) for key in "abcdefghij"}
    for key in "abc":
        pools[key] = made[key]
    assert pools.capacity == 4 and len(pools) == 3  # grew rather than evict "a"
    clock.advance(61.0)
    pools["d"] = made["d"]
    pools["e"] = made["e"]  # full, and "a" idle for 61 s: evicted and closed
    assert len(pools) == 4 and pools.capacity == 4
    made["a"].close.assert_called_once()
    for key in "fghij":  # "b" and "c" are idle (evicted); then "d" is not: grow
        pools[key] = made[key]
    assert pools.capacity == 8 and len(pools) == 7
    made["b"].close.assert_called_once()
    made["d"].close.assert_not_called()
    for key in "klmn":
        pools[key] = mock.Mock(name=key)
    assert pools.capacity == 8 and len(pools) == 8  # never beyond max_pools


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_pools"):
        InstancePools(10, max_pools=5)
