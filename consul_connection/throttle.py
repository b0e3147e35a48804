"""A 429 from the agent is the agent protecting itself, not an outage of the instances.

Consul answers ``429 Too Many Requests`` when this host holds more connections than
``http_max_conns_per_client`` allows (go-connlimit; a raw answer on a new connection),
or when its request rate limiter says so. Either way the agent is alive and its data is
fine: what it needs is fewer requests. So the watch rules (``consul_connection.watch``)
treat a rate-limited poll apart from an outage:

- it backs off from a longer floor (``WatchTiming.throttle_base``, 1 s, doubling to
  ``throttle_cap``, 30 s, with the shared jitter): a host over its budget must not keep
  knocking at the pace of an agent restart;
- the watch keeps its blocking index: the agent answered, it did not restart, so the
  answer after the episode continues the view (no self-preservation hold);
- the last good value keeps serving, marked stale (it *is* unconfirmed data; callers
  keep working, and ``stats()`` says why);
- a first resolve that meets it is not failed: the watch retries within the caller's
  resolve timeout, and only then does the caller get ``RateLimited``'s error;
- no log line per watch: one per *source* and episode (``ThrottleLog``), saying how
  many connections this process holds to the agent, and one when it ends;
- a counter per watch (``WatchState.rate_limited``), read by the watch stats.

``RateLimited`` marks an exception class as "the agent rate-limited us"; every client's
``ErrorKinds.throttled`` names one (the discovery client's ``ConsulRateLimitedError``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class RateLimited(Exception):
    """Mix-in for errors meaning "the agent answered 429": back off, nothing is down."""


def is_rate_limited(exc: BaseException) -> bool:
    """True when ``exc`` says the agent rate-limited the request."""
    return isinstance(exc, RateLimited)


class ThrottleLog:
    """One source's rate-limited episode: one warning when it begins, one when it ends.

    Watches report each throttled poll (``throttled``) and each answer (``answered``);
    the episode lasts while any watch is throttled. ``connections()`` tells how many
    connections this process holds to the agent (for the first line). Thread-safe.
    """

    def __init__(
        self,
        logger: logging.Logger,
        agent: str,
        *,
        connections: Callable[[], int | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._agent = agent
        self._connections = connections
        self._clock = clock
        self._lock = threading.Lock()
        self._throttled: set[str] = set()  # under _lock: watches throttled now
        self._since: float | None = None  # under _lock: when the episode began
        self._polls = 0  # under _lock: throttled polls in the episode
        self._watches: set[str] = set()  # under _lock: every watch throttled in the episode
        self.episodes = 0  # under _lock (read by tests and stats): episodes begun

    @property
    def active(self) -> bool:
        """True while some watch is throttled."""
        return self._since is not None

    def throttled(self, watch: str, error: BaseException) -> None:
        """A poll of ``watch`` was rate-limited."""
        with self._lock:
            self._throttled.add(watch)
            self._watches.add(watch)
            self._polls += 1
            first = self._since is None
            if first:
                self._since = self._clock()
                self.episodes += 1
        if first:
            held = self._connections()
            holds = f"; this process holds {held} connection(s) to it" if held else ""
            self._logger.warning(
                "Consul agent at %s is rate-limiting this host (HTTP 429: too many connections "
                "or requests from this address)%s; serving cached instances and retrying with "
                "backoff: %s",
                self._agent,
                holds,
                error,
            )
        else:
            self._logger.debug("Consul agent at %s rate-limited %s again", self._agent, watch)

    def answered(self, watch: str) -> None:
        """``watch`` got an answer: the episode ends when no watch is throttled."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            self._throttled.discard(watch)
            if self._throttled or self._since is None:
                return
            since, polls, watches = self._since, self._polls, len(self._watches)
            self._since, self._polls = None, 0
            self._watches.clear()
        self._logger.warning(
            "Consul agent at %s answering this process again after %.1fs rate-limited "
            "(%d throttled poll(s) over %d watch(es))",
            self._agent,
            max(0.0, self._clock() - since),
            polls,
            watches,
        )

    def forget(self, watch: str) -> None:
        """``watch`` stopped (closed or unasked): it no longer holds the episode open."""
        self.answered(watch)
