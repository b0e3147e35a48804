"""asyncio discovery: Consul blocking queries, one task per watched target, on your loop.

    async with AsyncConsulSource("127.0.0.1:8500") as source:
        resolution = await source.resolve("user-service")   # first call: one fetch
        source.subscribe("user-service", balancer.update)   # called on the event loop

For callers that live on an event loop: no thread per watched service, and every watch
is an asyncio task cancelled by ``aclose()``. Everything but the I/O is shared with the
threaded ``ConsulSource``: the query and what answers mean (``health_query``: the same
403 -> ``ConsulPermissionError``, ACL-filtered answers, unknown services), the watch
rules (``consul_connection.watch``: index, pacing, backoff, stale-on-error, a cached
first error, a 429's longer backoff and one log line per episode), and the keys,
listeners and ``resolve`` semantics (``source_table``). Consul is reached as
``ConsulConnection`` says (token, TLS) through the loop's shared transport
(``consul_connection.agent_transport``: one HTTP/2 connection for every long poll when
the agent speaks TLS and ``h2`` is installed, else HTTP/1.1), or through an
``httpx.AsyncClient`` you pass (``client=``).

**Forks and new loops.** An event loop does not survive a fork, nor ``asyncio.run``'s
end: a source used from another loop than its watches ran on (a forked child's, or the
next ``asyncio.run``) notices on its next use there (``resolve``, ``cached``,
``subscribe``, ``watch_stats``) and restarts every watch on that loop (with that loop's
connections; a client passed in must suit the new loop itself), keeping its cached
Resolutions and listeners.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from consul_discovery.client.agent_zone import AgentZoneReader, ZoneListener
from consul_discovery.client.chain.watches import ChainListener, ChainWatches
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.health_query import Consistency
from consul_discovery.client.instance import Resolution
from consul_discovery.client.snapshot_store import SnapshotStore
from consul_discovery.client.source import Listener, WatchKey, WatchStats
from consul_discovery.client.source_table import (
    DEFAULT_UNRESOLVED_TTL,
    FROM_ENV,
    WatchTable,
    source_settings,
)
from consul_discovery.client.target import Target
from consul_discovery.client.watch import HealthState, health_state
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.agent_sender import held_connections
from consul_discovery.connection.exchange import AsyncSend, Request, Response
from consul_discovery.connection.forking import after_fork_in_child
from consul_discovery.connection.server_sending import agent_sender, httpx_sender
from consul_discovery.connection.throttle import ThrottleLog
from consul_discovery.connection.watch import WatchState
from consul_discovery.connection.watch_drivers import WatchTask

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


class AsyncConsulSource:
    """Resolve services from Consul and keep them fresh with one asyncio task each.

    The same knobs as ``ConsulSource`` (``connection``, ``address``/``token`` overrides,
    ``service_config``, ``wait``, ``min_interval``, ``request_timeout``, backoff,
    ``unresolved_ttl``, ``consistency``, ``snapshots``, ``clock``, ``rng``); ``client`` is
    an ``httpx.AsyncClient`` already pointed at the agent to use instead of the shared
    transport (not closed here), ``send`` an awaitable ``Request -> Response`` instead of
    HTTP. Use it from one event loop at a time.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        connection: ConsulConnection | None = None,
        service_config: Callable[[str], ServiceConfig] | None = None,
        wait: float = 30.0,
        min_interval: float = 1.0,
        request_timeout: float = 10.0,
        backoff_base: float = 0.25,
        backoff_cap: float = 5.0,
        unresolved_ttl: float | None = DEFAULT_UNRESOLVED_TTL,
        consistency: Consistency = "default",
        snapshots: SnapshotStore | str | os.PathLike[str] | None = FROM_ENV,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        client: httpx.AsyncClient | None = None,
        send: AsyncSend | None = None,
    ) -> None:
        connection = ConsulConnection.resolve(connection, address=address, token=token)
        self.connection = connection
        self.address = connection.address
        self._timing, self._options = source_settings(
            wait=wait, min_interval=min_interval, request_timeout=request_timeout,
            backoff_base=backoff_base, backoff_cap=backoff_cap, consistency=consistency,
        )  # fmt: skip
        self._unresolved_ttl = unresolved_ttl
        self._clock = clock
        self._own_rng = rng is None
        self._rng = rng or random.Random()
        # On the event loop only: the shared transport follows the running loop itself.
        self._sender: AsyncSend | None = None
        if client is not None and send is None:
            self._sender = httpx_sender(connection, client)
        elif send is None:
            self._sender = agent_sender(connection)
        # The shared transport (not an injected client or send): renewed after a fork.
        self._owns_transport = client is None and send is None
        self._send: AsyncSend = send or self._sender  # type: ignore[assignment]
        self._throttle = ThrottleLog(log, connection.base_url, connections=self._connections)
        self._table: WatchTable[WatchTask] = WatchTable(
            service_config, self.address, "AsyncConsulSource", snapshots=snapshots
        )
        self._chains = ChainWatches(
            self.address, self._start_chain_watch, timing=self._timing,
            options=self._options, clock=clock, rng=self._rng,
        )  # fmt: skip
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the watches run on
        self._zone = AgentZoneReader(
            self.address, self._options, self._timing, rng=self._rng,
            start=self._on_loop, send=lambda: self._send,
        )  # fmt: skip
        self._forked = False  # set in a forked child, cleared on the loop by _revive
        self._forked_since_use = False  # set in a forked child, cleared by _revive
        after_fork_in_child(self._after_fork)

    # -- the InstanceSource operations, awaitable where they may wait ----------------

    async def resolve(self, service: str | Target, timeout: float = 5.0) -> Resolution:
        """The target's current Resolution; the first call starts its watch.

        Raises as ``ConsulSource.resolve`` does (the same cached first error while the
        watch retries): UnknownServiceError, ConsulPermissionError, ConsulQueryError,
        ConsulUnavailableError.
        """
        self._revive()
        key = self._table.key(service)
        entry = self._table.entry(key, self._start)
        resolution = entry.state.value
        if resolution is not None:
            return resolution
        answered = await entry.wait_first(timeout)
        return self._table.outcome(key, entry, answered, timeout)

    def cached(self, service: str | Target) -> Resolution | None:
        """The cached Resolution (None if not resolved yet); no I/O, starts nothing."""
        self._revive()
        return self._table.cached(self._table.key(service))

    def subscribe(self, service: str | Target, listener: Listener) -> None:
        """Call ``listener`` (on the event loop) with each new Resolution of ``service``;
        once right away if it is already resolved."""
        self._revive()
        current = self._table.subscribe(self._table.key(service), listener)
        if current is not None:
            listener(current)

    def unsubscribe(self, service: str | Target, listener: Listener) -> None:
        """Stop calling ``listener`` for ``service`` (no-op if it was not subscribed)."""
        self._table.unsubscribe(self._table.key(service), listener)

    def watch_stats(self, service: str | Target) -> WatchStats | None:
        """The target's watch counters (requests, errors, index); None if not watched."""
        self._revive()
        return self._table.stats(self._table.key(service))

    def watch_chain(self, service: str, listener: ChainListener) -> None:
        """Call ``listener`` (on the event loop) with each new discovery-chain router of
        ``service`` (``consul_discovery.client.chain.watches``); call from the loop."""
        self._revive()
        self._chains.watch(service, listener)

    def agent_zone(self, listener: ZoneListener) -> None:
        """Call ``listener`` with the zone of the agent this source reads from (its
        ``locality``; None: it has none, or may not be read), once known: read once, on
        the event loop (``consul_discovery.client.agent_zone``); call from the loop."""
        self._revive()
        self._zone.want(listener)

    def prime(self, service: str | Target) -> None:
        """Start the target's watch if it is not running (no I/O, no wait); call from
        the loop."""
        self._revive()
        self._table.entry(self._table.key(service), self._start)

    async def aclose(self) -> None:
        """Cancel every watch (a blocking query in flight is abandoned); give the shared
        transport back (the last user closes its connections)."""
        self._zone.close()
        for entry in [*self._table.close(), *self._chains.close()]:
            await entry.aclose()
        if self._sender is not None:
            await self._sender.aclose()

    async def __aenter__(self) -> AsyncConsulSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals -------------------------------------------------------------------

    async def _send_now(self, request: Request) -> Response:
        return await self._send(request)

    def _connections(self) -> int | None:
        return held_connections(self._sender)

    def _state(self, key: WatchKey) -> HealthState:
        return health_state(
            key, self.address, lambda resolution: self._table.notify(key, resolution),
            options=self._options, timing=self._timing, clock=self._clock, rng=self._rng,
            unresolved_ttl=self._unresolved_ttl, throttle=self._throttle,
        )  # fmt: skip

    def _start(self, key: WatchKey, state: HealthState | None = None) -> WatchTask:
        # Called under the table's lock, on the loop: creates a task, no I/O.
        task = WatchTask(
            state or self._state(key), self._send_now, name=f"consul-watch-{key.target}"
        )
        return task.start()

    def _start_chain_watch(self, state: WatchState[Any, Any], name: str) -> WatchTask:
        # On the loop (watch_chain is called from it, and the names' callbacks run there).
        return WatchTask(state, self._send_now, name=name).start()

    def _on_loop(self, read: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """The agent-zone read as a task of the running loop (None, closed, off a loop)."""
        try:
            return asyncio.get_running_loop().create_task(read, name="consul-agent-zone")
        except RuntimeError:
            read.close()
            return None

    def _after_fork(self) -> None:
        """In a forked child (no loop runs yet): a new lock; watches restart on next use."""
        self._table.after_fork()
        self._zone.after_fork()
        if self._own_rng:
            self._rng.seed()  # workers forked from one master must not share jitter
        self._forked = True
        self._forked_since_use = True
        self._throttle = ThrottleLog(log, self.connection.base_url, connections=self._connections)

    def _revive(self) -> None:
        """On a new event loop (a forked child's, or after ``asyncio.run`` ended the one
        the watches ran on): new client, every watch restarted there (no I/O)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on a loop: nothing can run now; the next use from one restarts
        if (loop is self._loop and not self._forked) or self._table.closed:
            return
        first_use, self._loop, self._forked = self._loop is None, loop, False
        self._zone.loop_gone()  # a read on the old loop ended with it
        self._zone.resume()  # (and one wanted off any loop starts now)
        if first_use:
            return
        if self._owns_transport and self._forked_since_use:
            # The parent's transport lease is the parent's: a fresh sender for this process.
            self._sender = agent_sender(self.connection)
            self._send = self._sender
        self._forked_since_use = False
        restarted = 0
        for key, entry in self._table.entries():
            if entry.finished and entry.state.value is None:
                continue  # stopped unresolved: the next resolve() starts it again
            entry.state.after_fork()
            self._table.replace(key, self._start(key, entry.state))
            restarted += 1
        self._chains.restart()  # the chain watches' tasks ended with their loop
        log.debug("restarted %d watch(es) on a new event loop", restarted)


__all__ = ["AsyncConsulSource"]
