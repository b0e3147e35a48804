"""Where instances come from: Consul's health endpoint, watched with blocking queries.

``ConsulSource`` is the discovery client's InstanceSource for threaded code. The first
``resolve()`` of a target starts its watch (no I/O on the caller's thread) and waits,
bounded by ``timeout``, for its first answer; every later ``resolve()`` returns the
cached Resolution, or the cached error while the watch retries with backoff, with no
network I/O. ``close()`` cuts in-flight long polls short and waits for the watches to
end (bounded); closing is not an outage: nothing is marked stale or logged.

**One event loop per process.** Every watch is an asyncio task (``WatchTask``) on the
process's private loop thread (``consul_connection.loop_thread``), not a thread of its
own, and every request goes through the loop's shared transport to the agent
(``consul_connection.agent_transport``): one HTTP/2 connection for all of the process's
long polls when the agent speaks TLS and ``h2`` is installed, else an HTTP/1.1 pool.
Listeners are called on that loop thread: keep them short (a Balancer's update is).
The query and what answers mean are ``health_query``'s, the watch rules
``consul_connection.watch``'s, the keys, listeners and ``resolve`` semantics
``source_table``'s: all shared with ``AsyncConsulSource``.

**Workers share their master's watches.** Under gunicorn with the registry's hooks, the
master watches each target once and relays it to every worker
(``consul_discovery.client.relay``); a source in a worker finds the relay in
``CONSUL_DISCOVERY_RELAY`` and asks it instead of Consul, and watches by itself again
if the relay goes away (said once). ``relay=False`` never uses it.

**A 429** (the agent protecting itself) keeps the cached set, backs off longer, and is
logged once per source and episode (``consul_connection.throttle``).

**Forks.** A source created before a fork (``gunicorn --preload``) restarts its watches
in the child at the fork (``consul_connection.forking``), on the child's own loop and
connections, keeping its cached Resolutions and listeners (through the relay, when the
child's master runs one). ``after_fork="close"`` abandons them in the child instead.

Injected blocking ``send``/``session`` (tests, custom transports) and ``sleep`` run on
executor threads, so they cannot stall the loop.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import requests

from consul_discovery.client.agent_zone import AgentZoneReader, ZoneListener
from consul_discovery.client.arguments import one_of
from consul_discovery.client.catalog_reads import CatalogReads, ServiceSummary
from consul_discovery.client.chain.decide import ChainRouter, plain_router
from consul_discovery.client.chain.query import DiscoveryChainQuery
from consul_discovery.client.chain.watches import ChainListener, ChainWatches
from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.errors import (
    ConsulQueryError,
)
from consul_discovery.client.health_query import (
    Consistency,
)
from consul_discovery.client.instance import Resolution
from consul_discovery.client.relay_client import RelayedWatch, RelayLink, relay_path
from consul_discovery.client.snapshot_store import SnapshotStore
from consul_discovery.client.source import Listener, WatchKey, WatchStats
from consul_discovery.client.source_io import SourceIO
from consul_discovery.client.source_table import (
    DEFAULT_UNRESOLVED_TTL,
    FROM_ENV,
    WatchTable,
    source_settings,
)
from consul_discovery.client.target import Target
from consul_discovery.client.watch import HealthState, health_state
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.exchange import (
    AsyncSend,
    Send,
)
from consul_discovery.connection.forking import after_fork_in_child
from consul_discovery.connection.loop_thread import LoopThread
from consul_discovery.connection.throttle import ThrottleLog
from consul_discovery.connection.watch import WatchState
from consul_discovery.connection.watch_drivers import WatchTask

log = logging.getLogger(__name__)

Entry = WatchTask | RelayedWatch
#: ``after_fork``'s choices: what a forked child does with the parent's watches.
AFTER_FORK = ("restart", "close")
Observer = Callable[[WatchKey, HealthState], None]


class ConsulSource(CatalogReads):
    """Resolve services from Consul and keep them fresh: one task per target on the
    process's event loop (see the module).

    ``connection`` says how to reach the agent (default: ``ConsulConnection.from_env()``,
    i.e. Consul's own variables); ``address`` and ``token``, when given, override its
    address and token. ``service_config(name)`` gives each service's filter, tag,
    datacenter, panic threshold and vanish grace (default: ``ServiceConfig()``).
    ``wait`` is the blocking-query wait (the read timeout is ``request_timeout + wait +
    wait/16``); ``min_interval`` bounds the request rate when answers carry no change;
    errors back off from ``backoff_base`` to ``backoff_cap``. A watch that never resolved
    stops after ``unresolved_ttl`` seconds without a ``resolve()`` (None: never);
    ``consistency`` is Consul's read mode. ``snapshots`` (a directory or a
    ``SnapshotStore``; default: ``DISCOVERY_SNAPSHOT_DIR``, None: off) keeps each
    target's last live set on disk for a cold start without Consul (``cold_start``).
    ``connection`` may name several servers (reads fail over between them:
    ``consul_connection.server_routing``). ``relay`` None uses the gunicorn master's
    relay when it advertises one (and this source uses its own default transport and
    read mode), False never. ``session`` (a requests Session, closed by ``close()``),
    ``send`` (a blocking ``Request -> Response`` function instead of HTTP, run on
    executor threads), ``asend`` (an awaitable one, run on the source's loop: e.g. a
    sender over several servers, each an ``AgentSender``), ``clock``, ``rng`` and
    ``sleep`` are injectable. AsyncConsulSource takes the same (its ``send`` awaitable).
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
        sleep: Callable[[float], object] | None = None,
        session: requests.Session | None = None,
        send: Send | None = None,
        asend: AsyncSend | None = None,
        relay: bool | None = None,
        after_fork: Literal["restart", "close"] = "restart",
    ) -> None:
        self._fork_policy = one_of("after_fork", after_fork, AFTER_FORK)
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
        self._blocking_send, self._session, self._asend = send, session, asend
        self._sleep = sleep
        injected = (send, asend, session)
        self._relay_wanted = relay is not False and all(x is None for x in injected)
        self._relay_wanted = self._relay_wanted and consistency == "default"
        self._observer: Observer | None = None  # set once by a relay server, before use
        self._table: WatchTable[Entry] = WatchTable(
            service_config, self.address, "ConsulSource", snapshots=snapshots
        )
        self._chains = ChainWatches(
            self.address, self._start_chain_watch, timing=self._timing,
            options=self._options, clock=clock, rng=self._rng,
        )  # fmt: skip
        # Chains followed through the master's relay (a gunicorn worker), under _chain_lock:
        self._chain_lock = threading.Lock()
        self._relayed_chains: dict[str, list[ChainListener]] = {}  # service -> listeners
        self._relayed_routers: dict[str, ChainRouter] = {}  # service -> last router
        self._chains_direct = False  # the relay went: chains are this process's own
        self._setup()  # the loop, sender, executor, throttle log and relay (again in a child)
        self._zone = AgentZoneReader(
            self.address, self._options, self._timing, rng=self._rng,
            start=lambda read: self._io.loop.submit(read), send=lambda: self._io.send,
        )  # fmt: skip
        after_fork_in_child(self._after_fork)

    def _setup(self) -> None:
        """What belongs to this process: replaced in a forked child (no I/O)."""
        self._io = SourceIO(
            self.connection,
            send=self._blocking_send,
            session=self._session,
            sleep=self._sleep,
            asend=self._asend,
        )
        self._throttle = ThrottleLog(
            log, self.connection.base_url, connections=self._io.connections
        )
        path = relay_path() if self._relay_wanted else None
        self._relay: RelayLink | None = None
        if path:
            self._relay = RelayLink(
                path,
                self.connection,
                self._io.loop,
                on_resolution=self._table.notify,
                on_gone=self._relay_gone,
                on_chain=self._relayed_chain,
            )

    # -- InstanceSource -------------------------------------------------------------

    def resolve(self, service: str | Target, timeout: float = 5.0) -> Resolution:
        """The target's current Resolution; the first call starts its watch.

        Never does network I/O on the caller's thread: it returns the cached Resolution,
        or waits up to ``timeout`` for the watch's first answer. While the target cannot
        be resolved, the watch retries with backoff and this raises its cached error:
        UnknownServiceError if Consul has never heard of the service,
        ConsulPermissionError if ACLs refused or emptied the answer,
        ConsulQueryError if Consul rejects the query (e.g. a bad filter),
        ConsulRateLimitedError if the agent kept answering 429 for the whole timeout,
        ConsulUnavailableError if Consul cannot be reached and nothing is cached.
        """
        key = self._table.key(service)
        entry = self._table.entry(key, self._start)
        resolution = entry.state.value
        if resolution is not None:
            return resolution
        answered = entry.state.wait_first(max(0.0, timeout))
        return self._table.outcome(key, entry, answered, timeout)  # type: ignore[arg-type]

    def cached(self, service: str | Target) -> Resolution | None:
        """The cached Resolution (None if not resolved yet); no I/O, starts nothing."""
        return self._table.cached(self._table.key(service))

    def subscribe(self, service: str | Target, listener: Listener) -> None:
        """Call ``listener`` (on the source's loop thread) with each new Resolution.

        If the target is already resolved, ``listener`` is first called once, right away
        on the caller's thread, with the current Resolution, so no update can be missed
        between ``resolve()`` and ``subscribe()``.
        """
        current = self._table.subscribe(self._table.key(service), listener)
        if current is not None:
            listener(current)

    def unsubscribe(self, service: str | Target, listener: Listener) -> None:
        """Stop calling ``listener`` for ``service`` (no-op if it was not subscribed)."""
        self._table.unsubscribe(self._table.key(service), listener)

    def watch_stats(self, service: str | Target) -> WatchStats | None:
        """The target's watch counters (requests, errors, index, 429s); None if not watched."""
        return self._table.stats(self._table.key(service))

    def watch_chain(self, service: str, listener: ChainListener) -> None:
        """Call ``listener`` (on the source's loop thread) with each new discovery-chain
        router of ``service`` (``consul_discovery.client.chain.watches``; no I/O here).
        While the gunicorn master's relay serves this source, the master watches the
        chain once for all its workers and relays it (one connection per application);
        if the relay goes, this process watches it itself."""
        with self._chain_lock:
            relayed = self.relayed and not self._chains_direct
            if relayed:
                listeners = self._relayed_chains.setdefault(service, [])
                first = not listeners
                listeners.append(listener)
                router = self._relayed_routers.get(service)
        if not relayed:
            self._chains.watch(service, listener)
            return
        relay = self._relay
        if first and relay is not None:
            relay.watch_chain(service)
        # The relay pushes chains only: until one comes, the service is called plainly
        # (no first call waits on a master that has nothing to say).
        listener(router if router is not None else plain_router(service))

    def agent_zone(self, listener: ZoneListener) -> None:
        """Call ``listener`` with the zone of the agent this source reads from (its
        ``locality``; None: it has none, or may not be read), once known: read once, on
        the source's loop (``consul_discovery.client.agent_zone``; no I/O here)."""
        self._zone.want(listener)

    def chain_body(self, service: str) -> str | None:
        """The body of the last discovery chain of ``service`` this source watched (for
        the relay: its workers read and compile it themselves)."""
        return self._chains.body(service)

    def prime(self, service: str | Target) -> None:
        """Start the target's watch if it is not running (no I/O, no wait)."""
        self._table.entry(self._table.key(service), self._start)

    def close(self, timeout: float = 2.0) -> None:
        """Stop every watch: cut in-flight long polls short, wait for them (``timeout``)."""
        entries: list[Any] = [*self._table.close(), *self._chains.close()]
        self._zone.close()
        if self._relay is not None:
            self._relay.close()
        self._io.close(_aclose_all(entries), timeout)
        lingering = [e.name for e in entries if isinstance(e, WatchTask) and e.alive]
        if lingering:
            log.warning("watch(es) still running %.1fs after close: %s", timeout, lingering)

    def __enter__(self) -> ConsulSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- for the relay (consul_discovery.client.relay) --------------------------------

    def observe(self, observer: Observer) -> None:
        """Call ``observer(key, state)`` on the loop after every poll of every watch
        started from now on (the relay pushes what changed from there)."""
        self._observer = observer

    def watch_key(self, key: WatchKey) -> HealthState | None:
        """Start (or keep alive) the watch of ``key``: its state (no I/O)."""
        entry = self._table.entry(key, self._start)
        return entry.state if isinstance(entry, WatchTask) else None

    @property
    def relayed(self) -> bool:
        """True while the gunicorn master's relay serves this source's watches."""
        return self._relay is not None and self._relay.usable

    @property
    def loop(self) -> LoopThread:
        """The loop thread the watches run on."""
        return self._io.loop

    # -- internals -------------------------------------------------------------------

    def _start(self, key: WatchKey) -> Entry:
        # Called under the table's lock: no I/O (a relayed ask is sent from the loop).
        relay = self._relay
        if relay is not None and relay.usable:
            return relay.watch(key)
        return self._direct(key)

    def _direct(self, key: WatchKey, seed: Resolution | None = None) -> WatchTask:
        state = health_state(
            key, self.address, lambda resolution: self._table.notify(key, resolution),
            options=self._options, timing=self._timing, clock=self._clock, rng=self._rng,
            unresolved_ttl=self._unresolved_ttl, throttle=self._throttle,
        )  # fmt: skip
        if seed is not None:
            state.seed(seed)
        return self._drive(key, state)

    def _drive(self, key: WatchKey, state: HealthState) -> WatchTask:
        observer = self._observer
        task = WatchTask(
            state,
            self._io.send,
            name=f"consul-watch-{key.target}",
            pause=self._io.pause,
            on_outcome=None if observer is None else (lambda s: observer(key, s)),
        )
        return task.start_on(self._io.loop.loop)

    def _start_chain_watch(self, state: WatchState[Any, Any], name: str) -> WatchTask:
        task = WatchTask(state, self._io.send, name=name, pause=self._io.pause)
        return task.start_on(self._io.loop.loop)

    def _relayed_chain(self, service: str, body: str) -> None:
        """A chain of ``service`` the master relayed (loop thread): read, compiled here."""
        answer = DiscoveryChainQuery(service, random=self._rng.random).read(None, body)
        with self._chain_lock:
            if self._chains_direct:
                return
            self._relayed_routers[service] = answer.router
            listeners = list(self._relayed_chains.get(service, ()))
        for listener in listeners:
            try:
                listener(answer.router)
            except Exception:
                log.exception("chain listener of %s failed", service)

    def _relay_gone(self, reason: str, warn: bool) -> None:
        """The relay cannot serve us (loop thread): watch every relayed target directly,
        from its last relayed Resolution on, and every relayed chain. Idempotent."""
        if reason:
            level = logging.WARNING if warn else logging.INFO
            log.log(level, "%s; watching Consul directly from this process", reason)
        if self._table.closed:
            return
        with self._chain_lock:
            self._chains_direct = True
            chains, self._relayed_chains = self._relayed_chains, {}
        for service, listeners in chains.items():
            for listener in listeners:
                self._chains.watch(service, listener)
        for key, entry in self._table.entries():
            if isinstance(entry, RelayedWatch):
                direct = self._direct(key, entry.state.value)
                entry.state.redirect(direct.state)
                self._table.replace(key, direct)

    def _after_fork(self) -> None:
        """In a forked child: a new lock, loop, sender; every watch restarted (no I/O)."""
        self._table.after_fork()
        if self._own_rng:
            self._rng.seed()  # workers forked from one master must not share jitter
        if self._table.closed:
            return
        if self._fork_policy == "close":
            self._table.close()  # the parent's (a relay's source): nothing of it runs here
            self._chains.close()
            return
        self._chain_lock = threading.Lock()  # the parent's may have been held
        self._setup()  # the parent's loop, connections and threads are not the child's
        self._zone.after_fork()
        self._zone.resume()  # a read the parent had in flight, asked again here
        # The parent's chain followers, asked again here: through this child's relay, or
        # by this child's own watches (the parent's tasks do not run here).
        _old, followers = self._chains.forget()
        for service, listeners in self._relayed_chains.items():
            followers.setdefault(service, []).extend(listeners)
        self._relayed_chains, self._relayed_routers = {}, {}
        self._chains_direct = False
        for service, listeners in followers.items():
            for listener in listeners:
                self.watch_chain(service, listener)
        relay = self._relay
        for key, entry in self._table.entries():
            value = entry.state.value
            if isinstance(entry, WatchTask) and entry.finished and value is None:
                continue  # stopped unresolved: the next resolve() starts it again
            if relay is not None and relay.usable:
                fresh: Entry = relay.watch(key)
                if value is not None:
                    fresh.state.seed(value)  # served until the relay's first answer
            elif isinstance(entry, WatchTask):
                entry.state.after_fork()
                fresh = self._drive(key, entry.state)
            else:
                fresh = self._direct(key, value)
            self._table.replace(key, fresh)


async def _aclose_all(entries: list[Entry]) -> None:
    for entry in entries:
        await entry.aclose()


__all__ = [
    "ConsulQueryError",
    "ConsulSource",
    "ServiceSummary",
]
