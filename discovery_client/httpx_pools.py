"""httpx transports with a connection pool per instance (the inner side of the httpx shells).

httpx/httpcore keeps one pool for all hosts: every request, and every response closed,
walks all of its connections (and asks each idle one whether the server closed it: a
system call each). Balancing over many instances with many connections makes that walk
the client's main cost. ``PerInstanceTransport`` and ``AsyncPerInstanceTransport`` give
each host:port its own ``httpx.HTTPTransport`` / ``AsyncHTTPTransport`` (``limits`` per
instance: by default no cap on connections, ``keepalive`` idle ones kept), made on first
use, so a request only walks its instance's connections. A pool not used for
``idle_after`` seconds (an instance that left, or that nobody picks) is closed; like
discovery_client/pool.py for requests, every instance in rotation keeps its pool.

Nothing slow happens at a pick: every pool of a process shares one SSL context
(``default_ssl_context``), made once when the first transport is built (httpx makes a
new one per transport otherwise, loading the CA bundle each time: about 50 ms of CPU),
and what httpcore imports at its first connection (its network backend: anyio and
trio, some 100-600 ms on this machine) is imported when the transport is built
(``preload_network_backend``). Both used to happen on the event loop at an instance's
first pick, stalling every call in flight on that loop: their latencies, as the
balancer measures them, jumped on every instance at once, and peak-EWMA kept that peak
for seconds (the async transport sent a slow instance 8.6% of the calls where the
threaded client sent it 0.3%).

Connect (mTLS) endpoints: the httpx shells put each attempt's SSL context (its Dial's)
in the request's extensions (``SSL_CONTEXT_EXTENSION``); the pool is then keyed by
host:port *and* that context and made with it (``verify=context``: our leaf out, the
mesh roots and the server's SPIFFE ID checked). When an instance is next used with
another context (the caller's identity rotated), its pool of the old context is closed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import ssl
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from consul_discovery.extras import missing

try:
    import httpx
except ImportError as exc:
    raise missing(__name__, "httpx", exc) from exc

DEFAULT_KEEPALIVE = 32
DEFAULT_IDLE_AFTER = 60.0

#: The request extension carrying a Connect attempt's SSL context.
SSL_CONTEXT_EXTENSION = "consul_ssl_context"

T = TypeVar("T")
_Key = tuple[str, "int | None", "ssl.SSLContext | None"]  # host, port, mesh context


# What httpcore imports lazily at its first connection, sync or asyncio (the last three
# are private module names: a missing one is only a missed warm-up, never an error).
_NETWORK_BACKEND_MODULES = (
    "httpcore",
    "anyio",
    "anyio.abc",
    "anyio._backends._asyncio",
    "httpcore._backends.anyio",
)


@functools.cache
def preload_network_backend() -> None:
    """Import, once per process, what httpcore would import at its first connection."""
    for name in _NETWORK_BACKEND_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The SSL context every per-instance pool of the process verifies servers with
    (httpx' default: the certifi bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``)."""
    return httpx.create_ssl_context()


def instance_limits(keepalive: int = DEFAULT_KEEPALIVE) -> httpx.Limits:
    """One instance's pool limits: no cap on connections, ``keepalive`` idle ones kept."""
    return httpx.Limits(max_connections=None, max_keepalive_connections=keepalive)


class _Pools(Generic[T]):
    """host:port → transport, with idle ones handed back for closing.

    Used from one event loop, or (sync) from many threads: dict operations are atomic,
    a racing first use makes at most one spare transport (no connection yet: dropped),
    and only pools nobody used for ``idle_after`` seconds are handed back.
    """

    def __init__(
        self,
        make: Callable[[ssl.SSLContext | None], T],
        idle_after: float,
        clock: Callable[[], float],
    ):
        self._make = make  # a transport, for a mesh context or (None) the default one
        self.idle_after = idle_after
        self._clock = clock
        self._pools: dict[_Key, T] = {}
        self._used: dict[_Key, float] = {}
        self._contexts: dict[tuple[str, int | None], ssl.SSLContext] = {}  # mesh, in force
        self._next_sweep = clock() + idle_after

    def get(self, request: httpx.Request | httpx.URL) -> tuple[T, list[T]]:
        """The pool for the request's host:port (and mesh context), and pools idle for
        ``idle_after`` or of an older mesh context of this instance (to close)."""
        context: ssl.SSLContext | None = None
        if isinstance(request, httpx.URL):
            url = request
        else:
            url = request.url
            context = request.extensions.get(SSL_CONTEXT_EXTENSION)
        key = (url.host, url.port, context)
        now = self._clock()
        pool = self._pools.get(key)
        idle: list[T] = []
        if pool is None:
            pool = self._pools.setdefault(key, self._make(context))
            if context is not None:
                old = self._contexts.get(key[:2])
                self._contexts[key[:2]] = context
                if old is not None and old is not context:
                    self._used.pop((url.host, url.port, old), None)
                    stale = self._pools.pop((url.host, url.port, old), None)
                    if stale is not None:
                        idle.append(stale)
        self._used[key] = now
        if now >= self._next_sweep:
            self._next_sweep = now + self.idle_after
            for old_key, last in list(self._used.items()):
                if now - last >= self.idle_after and old_key != key:
                    self._used.pop(old_key, None)
                    old = self._pools.pop(old_key, None)
                    if old is not None:
                        idle.append(old)
        return pool, idle

    def __len__(self) -> int:
        return len(self._pools)

    def drain(self) -> list[T]:
        """Forget every pool and return them (to close)."""
        pools = list(self._pools.values())
        self._pools.clear()
        self._used.clear()
        return pools


class PerInstanceTransport(httpx.BaseTransport):
    """An ``httpx.HTTPTransport`` per host:port, idle ones closed; thread-safe."""

    def __init__(
        self,
        limits: httpx.Limits | None = None,
        *,
        idle_after: float = DEFAULT_IDLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        per_instance = limits or instance_limits()
        context = default_ssl_context()  # made now, not at an instance's first pick
        preload_network_backend()
        self.pools: _Pools[httpx.HTTPTransport] = _Pools(
            lambda mesh: httpx.HTTPTransport(limits=per_instance, verify=mesh or context),
            idle_after,
            clock,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the pool of the request's host:port."""
        pool, idle = self.pools.get(request)
        for old in idle:
            old.close()
        return pool.handle_request(request)

    def close(self) -> None:
        """Close every pool."""
        for pool in self.pools.drain():
            pool.close()


class AsyncPerInstanceTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncHTTPTransport`` per host:port, idle ones closed; one event loop."""

    def __init__(
        self,
        limits: httpx.Limits | None = None,
        *,
        idle_after: float = DEFAULT_IDLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        per_instance = limits or instance_limits()
        context = default_ssl_context()  # made now: never on the event loop at a pick
        preload_network_backend()
        self.pools: _Pools[httpx.AsyncHTTPTransport] = _Pools(
            lambda mesh: httpx.AsyncHTTPTransport(limits=per_instance, verify=mesh or context),
            idle_after,
            clock,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send through the pool of the request's host:port."""
        pool, idle = self.pools.get(request)
        for old in idle:
            await old.aclose()
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        """Close every pool."""
        for pool in self.pools.drain():
            await pool.aclose()
