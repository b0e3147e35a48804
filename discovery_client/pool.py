"""Connection pools sized to the instances a client really talks to.

requests' HTTPAdapter keeps one urllib3 pool per host:port in an LRU of
``pool_connections`` pools (10 by default). A client balancing over more instances
than that evicts a pool on nearly every call, and with it the pool's keep-alive
connections: past 8 instances round robin opened a new TCP connection per request.

``InstancePools`` replaces that LRU: when a new instance's pool would push out one that
was used within ``idle_after`` seconds, it grows instead (doubling, up to ``max_pools``),
so every instance in rotation keeps its pool; only pools idle that long (instances that
left, or that nobody picks) are evicted, and an evicted pool's connections are closed.
``InstancePoolAdapter`` is an HTTPAdapter with that pool manager; ServiceClient mounts it
for ``http://`` and ``MeshPoolAdapter`` for ``https://``.

Connect (mTLS) endpoints, always ``https://``: the requests shell marks each attempt with
its Dial's SSL context (``SSL_CONTEXT_ATTR``); ``MeshPoolAdapter`` then asks urllib3 for a
pool keyed by host, port *and* that context (urllib3's PoolKey holds it), trusts only
what the context holds (never requests' CA bundle, which would otherwise be loaded into
the shared mesh context) and checks no hostname (the context checks the server's SPIFFE
ID). A new context for an instance (the caller's identity rotated) gets a new pool; the
instance's pool of the old context is closed at once.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3._collections import RecentlyUsedContainer  # PoolManager's own LRU type
from urllib3.connectionpool import HTTPConnectionPool

from consul_discovery.connection.forking import after_fork_in_child

DEFAULT_INITIAL_POOLS = 16
DEFAULT_MAX_POOLS = 4096
DEFAULT_IDLE_AFTER = 60.0

#: The attribute of a PreparedRequest naming the SSL context of a Connect attempt.
SSL_CONTEXT_ATTR = "consul_ssl_context"


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
        with self.lock:  # RecentlyUsedContainer's move to the end, under one acquisition
            container = self._container
            item = container.pop(key)
            container[key] = item
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
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child (a gunicorn worker of a ``--preload`` master): new, empty
        pools. The parent's connections stay the parent's: a child writing on a shared
        socket would interleave requests, and reading would steal its answers."""
        self.init_poolmanager(self._pool_connections, self._pool_maxsize, block=self._pool_block)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Build the PoolManager as HTTPAdapter does, then give it InstancePools."""
        super().init_poolmanager(*args, **kwargs)
        initial, max_pools, idle_after = self._pool_settings
        self.poolmanager.pools = InstancePools(initial, max_pools=max_pools, idle_after=idle_after)

    @property
    def pools(self) -> InstancePools:
        """The pool manager's pools (for stats and tests)."""
        return self.poolmanager.pools  # type: ignore[no-any-return]


class MeshPoolAdapter(InstancePoolAdapter):
    """``InstancePoolAdapter`` for ``https://``: a Connect attempt's pool is keyed by, and
    trusts only, its mesh context (plain ``http://`` never has one, so it is spared
    these steps on every request)."""

    def __init__(self, **kwargs: Any) -> None:
        self._mesh_lock = threading.Lock()  # guards _mesh_contexts writes (no I/O under it)
        # (host, port) -> the mesh context its pool uses now; read lock-free
        self._mesh_contexts: dict[tuple[str, int | None], ssl.SSLContext] = {}
        super().__init__(**kwargs)

    def _after_fork(self) -> None:
        """As InstancePoolAdapter's, with a new lock and no mesh context noted."""
        self._mesh_lock = threading.Lock()
        self._mesh_contexts = {}
        super()._after_fork()

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """requests' pool key, plus the attempt's mesh context for a Connect endpoint."""
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        context: ssl.SSLContext | None = getattr(request, SSL_CONTEXT_ATTR, None)
        if context is not None:
            for key in ("ca_certs", "ca_cert_dir", "cert_file", "key_file"):
                pool_kwargs.pop(key, None)
            pool_kwargs.update(
                ssl_context=context, cert_reqs="CERT_REQUIRED", assert_hostname=False
            )
            self._note_context(host_params["host"], host_params["port"], context)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """requests' CA bundle for plain TLS pools; a mesh pool trusts its context only."""
        if getattr(conn, "conn_kw", {}).get("ssl_context") is not None:
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = None
            conn.ca_cert_dir = None
            return
        super().cert_verify(conn, url, verify, cert)

    def _note_context(self, host: str, port: int | None, context: ssl.SSLContext) -> None:
        """Close the instance's pool of an older mesh context (the identity rotated)."""
        key = (host, port)
        old = self._mesh_contexts.get(key)
        if old is context:
            return
        with self._mesh_lock:
            old = self._mesh_contexts.get(key)
            if old is context:
                return
            self._mesh_contexts[key] = context
        if old is None:
            return
        pools = self.poolmanager.pools
        for pool_key in list(pools.keys()):
            if (
                getattr(pool_key, "key_ssl_context", None) is old
                and pool_key.key_host == host
                and pool_key.key_port == port
            ):
                del pools[pool_key]  # closes its idle connections; busy ones close on return
