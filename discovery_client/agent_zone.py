"""The caller's own zone, read from its Consul agent (``ServiceConfig(zone=AGENT_ZONE)``).

Envoy takes the zone its calls prefer from its node's locality. A Python process talks
to its own agent the same way, so the agent's ``locality`` (``/v1/agent/self``:
``DebugConfig.Locality.Zone``) is the caller's zone. It is read once per source, on the
source's loop, never on a caller's thread. Until it is known a balancer balances over
every zone (no preference, never a failed call); then each balancer that wants it
rebuilds its picker for that zone (``Balancer.set_zone``).

- An agent with no locality turns zone preference off (said once, at INFO).
- A token that may not read the agent (403: it lacks ``agent:read``) or any other
  refusal turns it off too, said once as a WARNING naming the fix.
- An agent that does not answer (or a 5xx, a 429) is asked again, on the one backoff
  (``consul_connection.backoff``) with the source's own base and cap.

``zone_exchange`` is the request and what its answer means (no I/O); ``AgentZoneReader``
does the reading for a source, which gives it its loop (``start``) and its ``send``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from consul_discovery.client.errors import (
    ConsulRateLimitedError,
    ConsulUnavailableError,
    DiscoveryError,
)
from consul_discovery.client.health_query import DISCOVERY_ERRORS, QueryOptions
from consul_discovery.connection.backoff import JitterBackoff
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import (
    AsyncSend,
    Exchange,
    Request,
    Response,
    TransportError,
    arun,
)
from consul_discovery.connection.refusals import answer_error, transport_error

log = logging.getLogger(__name__)

AGENT_SELF = "/v1/agent/self"
ABOUT = "the agent's own configuration (its locality)"

#: Called with the caller's zone once it is known (None: zone preference off).
ZoneListener = Callable[[str | None], None]


def read_zone(response: Response, address: str) -> str | None:
    """The zone in an answer of ``/v1/agent/self`` (None: the agent has no locality);
    raises the mapped error for a refusal."""
    error = answer_error(response, ABOUT, address, DISCOVERY_ERRORS)
    if error is not None:
        raise error
    body = response.json()
    debug = body.get("DebugConfig") if isinstance(body, dict) else None
    locality = debug.get("Locality") if isinstance(debug, dict) else None
    zone = locality.get("Zone") if isinstance(locality, dict) else None
    return zone if isinstance(zone, str) and zone else None


def zone_exchange(options: QueryOptions, address: str) -> Exchange[str | None]:
    """Ask the agent for its own configuration, once; its zone (None: no locality)."""
    return read_zone((yield Request(AGENT_SELF, (), options.request_timeout)), address)


class AgentZoneReader:
    """One source's reading of its agent's zone, handed to every listener once known.

    ``timing`` is the source's (its error backoff). ``start`` schedules a coroutine on
    the source's loop and returns something with ``cancel()``, or None when no loop can
    run it now (``resume`` tries again). ``send`` gives the source's current awaitable
    send (a forked child has a new one).
    Listeners are called on the source's loop, or at once on the caller's thread when
    the zone is already known. Thread-safe.
    """

    def __init__(
        self,
        address: str,
        options: QueryOptions,
        timing: WatchTiming,
        *,
        rng: random.Random,
        start: Callable[[Coroutine[Any, Any, None]], Any],
        send: Callable[[], AsyncSend],
    ) -> None:
        self._address = address
        self._options = options
        # The watch's error backoff (a base above the cap waits the cap, as there).
        cap = timing.backoff_cap
        self._backoff = JitterBackoff(min(timing.backoff_base, cap), cap, rng=rng)
        self._start = start
        self._send = send
        self._lock = threading.Lock()  # guards every field below
        self._listeners: list[ZoneListener] = []  # waiting for the zone
        self._known = False
        self._zone: str | None = None  # meaningful once _known
        self._running: Any = None  # the read in flight (has cancel()), or None
        self._closed = False

    @property
    def zone(self) -> str | None:
        """The agent's zone once read (None before, or when there is none)."""
        return self._zone

    def want(self, listener: ZoneListener) -> None:
        """Call ``listener`` with the zone once known; the first wish starts the read."""
        with self._lock:
            known, zone = self._known, self._zone
            if not known:
                self._listeners.append(listener)
        if known:
            listener(zone)
        else:
            self.resume()

    def resume(self) -> None:
        """Start the read if a listener waits for it and none runs (no I/O here)."""
        with self._lock:
            if self._known or self._closed or self._running is not None or not self._listeners:
                return
            # None: no loop can run it now; the source resumes it from its loop
            self._running = self._start(self._read())

    def loop_gone(self) -> None:
        """The loop a read ran on is gone (an ended event loop): ``resume`` starts another."""
        with self._lock:
            self._running = None

    def after_fork(self) -> None:
        """In a forked child: the parent's read does not run here; ``resume`` restarts it."""
        self._lock = threading.Lock()  # the parent's may have been held at the fork
        self._running = None

    def close(self) -> None:
        """Stop reading (a read in flight is cancelled); listeners are not called."""
        with self._lock:
            self._closed = True
            running, self._running = self._running, None
            self._listeners.clear()
        if running is not None:
            running.cancel()

    async def _read(self) -> None:
        failures = 0
        while True:
            try:
                zone = await arun(zone_exchange(self._options, self._address), self._send())
            except (TransportError, ConsulUnavailableError, ConsulRateLimitedError) as exc:
                failures += 1
                if failures == 1:
                    reason = (
                        exc
                        if not isinstance(exc, TransportError)
                        else transport_error(exc, ABOUT, self._address, DISCOVERY_ERRORS)
                    )
                    log.info("zone-aware routing waits for the agent's zone: %s", reason)
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            except DiscoveryError as exc:  # refused (403: no agent:read; other 4xx)
                log.warning(
                    "zone-aware routing is off (AGENT_ZONE): %s. Give the token agent:read "
                    "on this agent's node, or name the zone: ServiceConfig(zone=...)",
                    exc,
                )
                zone = None
            else:
                if zone is None:
                    log.info(
                        "zone-aware routing is off (AGENT_ZONE): the agent at %s has no "
                        "locality (its config's locality.zone)",
                        self._address,
                    )
            self._settle(zone)
            return

    def _settle(self, zone: str | None) -> None:
        with self._lock:
            if self._closed:
                return
            self._known, self._zone, self._running = True, zone, None
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener(zone)
            except Exception:
                log.exception("a zone listener failed")
