"""Where instances come from: Consul's health endpoint, watched with blocking queries.

``ConsulSource`` is the discovery client's InstanceSource, on threads. The first
``resolve()`` of a target starts one background watch thread for it (no I/O on the
caller's thread) and waits, bounded by ``timeout``, for its first answer; every later
``resolve()`` returns the cached Resolution, or the cached error while the watch retries
with backoff, with no network I/O. ``close()`` cuts in-flight long polls short and joins
the threads (bounded); closing is not an outage: nothing is marked stale or logged.

Only the I/O is here (a requests Session, ``consul_connection.sending``). The query and
what its answers mean are ``health_query``'s, the watch rules
``consul_connection.watch``'s, the keys, listeners and ``resolve`` semantics
``source_table``'s: all shared with ``AsyncConsulSource``.

**Forks.** A source created before a fork (``gunicorn --preload``) restarts its watches
in the child at the fork (``consul_connection.forking``), with a new Session, keeping
its cached Resolutions and listeners: the child never serves a frozen set.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

import requests

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.errors import ConsulQueryError, DiscoveryError
from consul_discovery.client.health_query import (
    DISCOVERY_ERRORS,
    Consistency,
    instances_exchange,
    services_exchange,
    what,
)
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.snapshot_store import SnapshotStore
from consul_discovery.client.source import Listener, WatchKey, WatchStats
from consul_discovery.client.source_table import (
    DEFAULT_UNRESOLVED_TTL,
    FROM_ENV,
    WatchTable,
    source_settings,
)
from consul_discovery.client.target import Target
from consul_discovery.client.watch import health_state
from consul_discovery.connection import ConsulConnection
from consul_discovery.connection.exchange import Request, Response, Send, TransportError, run
from consul_discovery.connection.forking import after_fork_in_child
from consul_discovery.connection.refusals import transport_error
from consul_discovery.connection.resource import Poll
from consul_discovery.connection.server_sending import session_sender
from consul_discovery.connection.watch_drivers import WatchThread

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """One catalog service and how many of its instances are in each health state."""

    name: str
    passing: int
    warning: int
    critical: int

    @property
    def total(self) -> int:
        """Every registered instance, whatever its health."""
        return self.passing + self.warning + self.critical


class ConsulSource:
    """Resolve services from Consul and keep them fresh with one watch thread each.

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
    ``consul_connection.server_routing``). ``session`` (a requests Session, closed by
    ``close()``), ``send`` (a ``Request -> Response`` function instead of HTTP),
    ``clock``, ``rng`` and ``sleep`` are injectable. AsyncConsulSource takes the same.
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
        snapshots: SnapshotStore | str | None = FROM_ENV,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], object] | None = None,
        session: requests.Session | None = None,
        send: Send | None = None,
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
        self._sleep = sleep
        # Replaced only in a forked child (_after_fork), before any thread runs there:
        self._sender = session_sender(connection, session) if send is None else None
        self._send: Send = send or self._sender  # type: ignore[assignment]
        self._table: WatchTable[WatchThread] = WatchTable(
            service_config, self.address, "ConsulSource", snapshots=snapshots
        )
        after_fork_in_child(self._after_fork)

    # -- InstanceSource -------------------------------------------------------------

    def resolve(self, service: str | Target, timeout: float = 5.0) -> Resolution:
        """The target's current Resolution; the first call starts its watch.

        Never does network I/O on the caller's thread: it returns the cached Resolution,
        or waits up to ``timeout`` for the watch's first answer. While the target cannot
        be resolved, the watch retries with backoff and this raises its cached error:
        UnknownServiceError if Consul has never heard of the service,
        ConsulPermissionError if ACLs refused or emptied the answer,
        ConsulQueryError if Consul rejects the query (e.g. a bad filter),
        ConsulUnavailableError if Consul cannot be reached and nothing is cached.
        """
        key = self._table.key(service)
        entry = self._table.entry(key, self._start)
        resolution = entry.state.value
        if resolution is not None:
            return resolution
        answered = entry.state.wait_first(max(0.0, timeout))
        return self._table.outcome(key, entry, answered, timeout)

    def cached(self, service: str | Target) -> Resolution | None:
        """The cached Resolution (None if not resolved yet); no I/O, starts nothing."""
        return self._table.cached(self._table.key(service))

    def subscribe(self, service: str | Target, listener: Listener) -> None:
        """Call ``listener`` (on the watch thread) with each new Resolution of ``service``.

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
        """The target's watch counters (requests, errors, index); None if not watched."""
        return self._table.stats(self._table.key(service))

    def close(self, timeout: float = 2.0) -> None:
        """Stop every watch: cut in-flight long polls short, join threads (``timeout`` in all)."""
        entries = self._table.close()
        for entry in entries:
            entry.stop()
        if self._sender is not None:
            self._sender.interrupt()
        deadline = time.monotonic() + timeout
        for entry in entries:
            entry.join(deadline - time.monotonic())
        lingering = [entry.name for entry in entries if entry.alive]
        if lingering:
            log.warning("watch thread(s) still running %.1fs after close: %s", timeout, lingering)
        if self._sender is not None:
            self._sender.close()

    def __enter__(self) -> ConsulSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one-shot catalog reads (for the CLI and operators; always network) ----------

    def list_services(self) -> tuple[ServiceSummary, ...]:
        """Every service in the catalog with passing/warning/critical instance counts."""
        names = self._once(services_exchange(None, self._options, self.address), "the catalog")
        summaries = []
        for name in names:
            counts = {"passing": 0, "warning": 0, "critical": 0}
            for instance in self.list_instances(name):
                counts[instance.health] += 1
            summaries.append(ServiceSummary(name, **counts))
        return tuple(summaries)

    def list_instances(self, service: str | Target) -> tuple[Instance, ...]:
        """Every registered instance of ``service`` (all health states), fresh from Consul."""
        target = self._table.key(service).target
        poll = Poll(0, self._timing.wait, resolved=False)
        exchange = instances_exchange(target, poll, self._options, self.address)
        return self._once(exchange, what(target)).value

    # -- internals -------------------------------------------------------------------

    def _once(self, exchange: Generator[Request, Response, T], about: str) -> T:
        if self._table.closed:
            raise DiscoveryError("ConsulSource is closed")
        try:
            return run(exchange, self._send)
        except TransportError as exc:
            mapped = transport_error(exc, about, self.address, DISCOVERY_ERRORS)
            raise mapped from mapped.__cause__

    def _start(self, key: WatchKey) -> WatchThread:
        # Called under the table's lock: builds and starts a thread, no I/O.
        state = health_state(
            key, self.address, lambda resolution: self._table.notify(key, resolution),
            options=self._options, timing=self._timing, clock=self._clock, rng=self._rng,
            unresolved_ttl=self._unresolved_ttl,
        )  # fmt: skip
        thread = WatchThread(
            state, self._send, name=f"consul-watch-{key.target}", sleep=self._sleep
        )
        return thread.start()

    def _after_fork(self) -> None:
        """In a forked child: a new lock and Session, every watch restarted (no I/O)."""
        self._table.after_fork()
        if self._own_rng:
            self._rng.seed()  # workers forked from one master must not share jitter
        if self._table.closed:
            return
        if self._sender is not None:
            # The parent's pooled connections are the parent's: never read or close them.
            self._sender = session_sender(self.connection)
            self._send = self._sender
        for _key, entry in self._table.entries():
            entry.restart_in_child(self._send)


__all__ = [
    "ConsulQueryError",
    "ConsulSource",
    "ServiceSummary",
]
