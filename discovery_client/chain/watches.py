"""A source's chain watches: which services have a chain, and each one's chain (no I/O).

Both Consul sources own one ``ChainWatches``. ``watch(service, listener)`` asks for a
service's chain: the first ask starts the config-entry watch of the source
(``facts.ChainNamesWatch``; one, whatever the number of services); a service some
entry names gets its own ``/v1/discovery-chain/<service>`` watch (``query.ChainWatch``),
started when the names first include it and kept from then on (when its entries are
deleted, Consul answers its default chain: a plain router). Every new router is handed
to the service's listeners, on the watches' loop. A service no entry names gets no
watch and no call: it stays plain, exactly as a client without chains; its listeners
are handed a plain router once, when the names first show it is not among them (so a
caller holding its first calls until the chain is known goes on at once).

The watches run on the shared engine like the health watches (``start`` is the source's
own way to drive a ``WatchState``: a task on its loop). A gunicorn worker served by its
master's relay asks the master instead (``relay_protocol``: the master runs these
watches once for all its workers and relays each chain's body).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from consul_discovery.client.chain.decide import ChainRouter, plain_router
from consul_discovery.client.chain.facts import NAMES_WAIT, ChainNamesWatch, Names
from consul_discovery.client.chain.query import ChainAnswer, ChainWatch, DiscoveryChainQuery
from consul_discovery.client.health_query import QueryOptions
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.watch import WatchState

log = logging.getLogger(__name__)

ChainListener = Callable[[ChainRouter], None]

#: The config-entry watch's name (its task's too); a service's chain watch is named by it.
NAMES = "consul-watch-config-entries"


class Driven(Protocol):
    """A started watch (``WatchTask``): closed with ``aclose``."""

    async def aclose(self) -> None: ...


Start = Callable[[WatchState[Any, Any], str], Driven]


class ChainWatches:
    """The chain watches of one source (see the module); safe across threads."""

    def __init__(
        self,
        address: str,
        start: Start,
        *,
        timing: WatchTiming,
        options: QueryOptions,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._address = address
        self._start = start
        self._timing = timing
        self._options = options
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # guards every field below
        self._listeners: dict[str, list[ChainListener]] = {}  # any thread, under _lock
        self._names: Names = frozenset()  # written on the loop, under _lock
        self._names_known = False  # the config-entry watch answered once (as _names)
        self._names_failing = False  # ... or failed before its first answer (as _names)
        self._routers: dict[str, ChainRouter] = {}  # service -> last router (loop, _lock)
        self._bodies: dict[str, str] = {}  # service -> its last answer's body (as _routers)
        self._running: dict[str, Driven] = {}  # facts and chain watches by name (_lock)
        self._closed = False  # under _lock

    def watch(self, service: str, listener: ChainListener) -> None:
        """Hand ``listener`` every new router of ``service`` (at once if one is known)."""
        with self._lock:
            if self._closed:
                return
            self._listeners.setdefault(service, []).append(listener)
            router = self._routers.get(service)
            if NAMES not in self._running:
                self._running[NAMES] = self._start_names()
            if service in self._names and service not in self._running:
                self._running[service] = self._start_chain(service)
            elif router is None and (
                (self._names_known and service not in self._names) or self._names_failing
            ):
                router = plain_router(service)  # no entry names it, or none known: no wait
        if router is not None:
            listener(router)

    def router(self, service: str) -> ChainRouter | None:
        """The last router of ``service`` (None: it has no chain watched)."""
        return self._routers.get(service)

    def body(self, service: str) -> str | None:
        """The body of ``service``'s last chain answer (None: none yet), for a relay."""
        return self._bodies.get(service)

    def chained(self) -> frozenset[str]:
        """The services some resolver, router or splitter entry names (as last seen)."""
        return self._names

    def restart(self) -> list[Driven]:
        """Start every watch again through ``start`` (a forked child's new loop, or a new
        event loop): the old ones are returned for the owner to drop. Routers are kept."""
        self._lock = threading.Lock()  # a forked child's: the parent's may have been held
        with self._lock:
            old, self._running = self._running, {}
            if self._closed or not self._listeners:
                return list(old.values())
            self._running[NAMES] = self._start_names()
            for name in old:
                if name != NAMES:
                    self._running[name] = self._start_chain(name)
        return list(old.values())

    def forget(self) -> tuple[list[Driven], dict[str, list[ChainListener]]]:
        """In a forked child whose chains a relay will serve: drop the parent's watches
        (they do not run here) and hand back every listener; start nothing."""
        self._lock = threading.Lock()  # a forked child's: the parent's may have been held
        with self._lock:
            old, self._running = self._running, {}
            listeners, self._listeners = self._listeners, {}
        return list(old.values()), listeners

    def close(self) -> list[Driven]:
        """Stop starting watches; the running ones, for the owner to ``aclose``."""
        with self._lock:
            self._closed = True
            running, self._running = list(self._running.values()), {}
        return running

    # -- internals (the callbacks run on the watches' loop) ------------------------------

    def _state(
        self,
        resource: Any,
        on_change: Callable[[Any], None],
        timing: WatchTiming,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> WatchState[Any, Any]:
        return WatchState(
            resource, on_change, timing=timing, clock=self._clock, rng=self._rng,
            on_error=on_error,
        )  # fmt: skip

    def _start_names(self) -> Driven:
        resource = ChainNamesWatch(
            self._address,
            request_timeout=self._options.request_timeout,
            consistency=self._options.consistency,
        )
        timing = dataclasses.replace(self._timing, wait=min(self._timing.wait, NAMES_WAIT))
        state = self._state(resource, self._on_names, timing, self._on_names_error)
        return self._start(state, NAMES)

    def _start_chain(self, service: str) -> Driven:
        query = DiscoveryChainQuery(service, random=self._rng.random)
        resource = ChainWatch(query, self._address, self._options.request_timeout)
        state = self._state(resource, lambda answer: self._on_chain(service, answer), self._timing)
        return self._start(state, f"consul-watch-chain-{service}")

    def _on_names(self, names: Names) -> None:
        with self._lock:
            if self._closed:
                return
            first, self._names_known = not self._names_known, True
            self._names, self._names_failing = names, False
            plain: list[tuple[str, list[ChainListener]]] = []
            for service, listeners in self._listeners.items():
                if service in names and service not in self._running:
                    log.info("%s has a discovery chain: watching it", service)
                    self._running[service] = self._start_chain(service)
                elif first and service not in names and service not in self._routers:
                    plain.append((service, list(listeners)))
        self._tell_plain(plain)

    def _on_names_error(self, _error: BaseException) -> None:
        """The config-entry watch failed before its first answer: no caller waits for a
        chain it cannot learn of (each is called plainly until its chain comes)."""
        with self._lock:
            if self._closed or self._names_known or self._names_failing:
                return
            self._names_failing = True
            plain = [
                (service, list(listeners))
                for service, listeners in self._listeners.items()
                if service not in self._routers
            ]
        self._tell_plain(plain)

    def _tell_plain(self, plain: list[tuple[str, list[ChainListener]]]) -> None:
        """Hand each service's listeners a plain router (outside the lock)."""
        for service, listeners in plain:
            router = plain_router(service)
            for listener in listeners:
                try:
                    listener(router)
                except Exception:
                    log.exception("chain listener of %s failed", service)

    def _on_chain(self, service: str, answer: ChainAnswer) -> None:
        with self._lock:
            self._routers[service] = answer.router
            self._bodies[service] = answer.body
            listeners = list(self._listeners.get(service, ()))
        for listener in listeners:
            try:
                listener(answer.router)
            except Exception:
                log.exception("chain listener of %s failed", service)
