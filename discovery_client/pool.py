"""Connection pools sized to the instances a client really talks to.

requests' HTTPAdapter keeps one urllib3 pool per host:port in an LRU of
``pool_connections`` pools (10 by default). A client balancing over more instances
than that evicts a pool on nearly every call, and with it the pool's keep-alive
connections: past 8 instances round robin opened a new TCP connection per request.

``InstancePools`` replaces that LRU: when a new instance's pool would push out one that
was used within ``idle_after`` seconds, it grows instead (doubling, up to ``max_pools``),
so every instance in rotation keeps its pool; only pools idle that long (instances that
left, or that nobody picks) are evicted, and an evicted pool's connections are closed.
``InstancePoolAdapter`` is an HTTPAdapter with that pool manager.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3._collections import RecentlyUsedContainer  # PoolManager's own LRU type
from urllib3.connectionpool import HTTPConnectionPool

DEFAULT_INITIAL_POOLS = 16
DEFAULT_MAX_POOLS = 4096
DEFAULT_IDLE_AFTER = 60.0


def _close_pool(pool: HTTPConnectionPool) -> None:
    pool.close()


class InstancePools(RecentlyUsedContainer[Any, HTTPConnectionPool]):
    """A PoolManager's pools: an LRU that grows rather than evict a pool in recent use.

    All state is guarded by the container's own ``lock`` (urllib3 also takes it around
    pool creation); ``_used`` maps each key to the clock time of its last use.
    """

    def __init__(
        self,
        initial: int = DEFAULT_INITIAL_POOLS,
        *,
        max_pools: int = DEFAULT_MAX_POOLS,
        idle_after: float = DEFAULT_IDLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= initial <= max_pools:
            raise ValueError(f"need 1 <= initial ({initial}) <= max_pools ({max_pools})")
        super().__init__(initial, dispose_func=_close_pool)
        self.max_pools = max_pools
        self.idle_after = idle_after
        self._clock = clock
        self._used: dict[Any, float] = {}  # under lock

    @property
    def capacity(self) -> int:
        """How many pools are kept before the least recently used one is evicted."""
        return self._maxsize

    def __getitem__(self, key: Any) -> HTTPConnectionPool:
        with self.lock:
            item = super().__getitem__(key)
            self._used[key] = self._clock()
            return item

    def __setitem__(self, key: Any, value: HTTPConnectionPool) -> None:
        with self.lock:
            now = self._clock()
            if key not in self._container and len(self._container) >= self._maxsize:
                oldest = next(iter(self._container))
                if now - self._used.get(oldest, now) < self.idle_after:
                    self._maxsize = min(self.max_pools, self._maxsize * 2)
            self._used[key] = now
            super().__setitem__(key, value)  # evicts (and closes) the LRU pool if still full
            if len(self._used) > len(self._container):
                self._used = {k: self._used[k] for k in self._container if k in self._used}

    def __delitem__(self, key: Any) -> None:
        with self.lock:
            self._used.pop(key, None)
            super().__delitem__(key)

    def clear(self) -> None:
        """Close and forget every pool."""
        with self.lock:
            self._used.clear()
            super().clear()


class InstancePoolAdapter(HTTPAdapter):
    """An HTTPAdapter whose pool manager keeps a pool per instance in rotation."""

    def __init__(
        self,
        *,
        pool_maxsize: int = 32,
        initial_pools: int = DEFAULT_INITIAL_POOLS,
        max_pools: int = DEFAULT_MAX_POOLS,
        idle_after: float = DEFAULT_IDLE_AFTER,
    ) -> None:
        self._pool_settings = (initial_pools, max_pools, idle_after)
        super().__init__(pool_connections=initial_pools, pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Build the PoolManager as HTTPAdapter does, then give it InstancePools."""
        super().init_poolmanager(*args, **kwargs)
        initial, max_pools, idle_after = self._pool_settings
        self.poolmanager.pools = InstancePools(initial, max_pools=max_pools, idle_after=idle_after)

    @property
    def pools(self) -> InstancePools:
        """The pool manager's pools (for stats and tests)."""
        return self.poolmanager.pools
