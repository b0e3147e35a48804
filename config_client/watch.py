"""One KV prefix's recursive blocking-query loop, on the discovery client's watch rules.

The rules are shared, not copied: ``next_index`` (take ``X-Consul-Index``; missing or
< 1 counts as 1; backwards resets to 0) and ``WatchTiming`` (blocking wait; an unchanged
answer waits ``min_interval`` from the previous start, so a broken agent can never make
the loop spin) come from
``consul_discovery.client.watch``, the backoff (capped, equal jitter) from
``consul_discovery.connection.backoff``. What is particular to KV:

- A 404 is an empty prefix, not a change; only different content is reported.
- The query names the layer without its trailing ``/`` (``config/orders``) and keeps
  only the keys under ``config/orders/``: Consul wakes a prefix query on a delete-tree
  only when the deleted prefix starts with the queried one, so ``config/orders/`` would
  sleep through ``consul kv delete -recurse config/orders`` (seen on 1.22). A delete of
  a parent (``config``) wakes nobody; the answer at the end of the wait is compared
  like any other, so even that is picked up within ``timing.wait``.
- After an error the next read is a plain one (index 0): a restarted agent's index may
  be lower than ours.
- **An emptied prefix after an outage is suspect** (the rule ``ARCHITECTURE.md`` gives a
  registry that suddenly forgets): a prefix that had keys and reads empty right after
  Consul was unreachable or its index went backwards (a dev agent, or one that lost its
  data dir, comes back empty; a restart between two queries shows no error at all)
  keeps its last-known-good content until keys appear in it again; then content is
  compared, so re-putting the same data fires nothing and a changed value fires once.
  A prefix emptied while Consul stayed reachable is a real delete and is reported.
- Each plain read (index 0) first checks that the token may read the layer at all:
  Consul answers a recursive read it denies with the same 404 as an empty prefix.
- Errors never stop the loop: before the first success they are handed to
  ``on_error`` (the client decides about fail-fast); afterwards the content is kept.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping

from consul_discovery.config.kv import KVStore
from consul_discovery.connection.backoff import JitterBackoff
from consul_discovery.connection.blocking import WatchTiming, next_index

log = logging.getLogger(__name__)

Content = Mapping[str, str | None]
OnContent = Callable[[str, Content, int], None]
OnError = Callable[[str, BaseException], None]


class PrefixWatch:
    """The last content read under one prefix and the loop that keeps it fresh.

    ``poll_once`` does one request and returns the seconds to sleep before the next;
    ``run`` loops it on the watch's own thread. Every field is the watch thread's.
    """

    def __init__(
        self,
        store: KVStore,
        prefix: str,
        on_content: OnContent,
        on_error: OnError,
        *,
        timing: WatchTiming,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.prefix = prefix
        self._store = store
        self._on_content = on_content
        self._on_error = on_error
        self._timing = timing
        self._clock = clock
        self._rng = rng
        self._index = 0  # watch thread only
        self._failures = 0  # watch thread only: consecutive failed requests
        self._content: dict[str, str | None] | None = None  # watch thread only
        self._reset_suspected = False  # watch thread only: error or index reset, unresolved
        self.held = False  # watch thread writes, others read: holding content (see rules)
        self.requests = 0  # watch thread only (read by tests/metrics)

    @property
    def index(self) -> int:
        """The index the next query sends (0: a plain read)."""
        return self._index

    def poll_once(self) -> float:
        """Do one request; return seconds to sleep before the next."""
        started = self._clock()
        self.requests += 1
        try:
            if self._index == 0:  # a plain read: also learn whether we may read here
                self._store.check_readable(self.prefix)
            listing = self._store.list(self.prefix.rstrip("/"), self._index, self._timing.wait)
        except Exception as exc:  # any failure: the loop must survive it
            return self._error(exc)
        self._failures = 0
        previous = self._index
        self._index = next_index(previous, listing.index)
        if self._index == 0:
            # The agent's state was reset (a restart between two of our queries shows no
            # error at all, only this): what it now lacks is suspect, like after an error.
            self._reset_suspected = True
            log.info(
                "consul index of %s went backwards (%s -> %s): reset",
                self.prefix,
                previous,
                listing.index,
            )
        content = {k: v for k, v in listing.values().items() if k.startswith(self.prefix)}
        old = self._content
        if old and not content and self._reset_suspected:
            if not self.held:
                log.warning(
                    "%s reads empty after Consul was unreachable: keeping its last %d "
                    "key(s) until keys appear again",
                    self.prefix,
                    len(old),
                )
            self.held = True
            return max(0.0, started + self._timing.min_interval - self._clock())
        self._reset_suspected = False
        self.held = False
        changed = old is None or content != old
        self._content = content
        if changed:
            self._on_content(self.prefix, content, listing.index or 1)
        if old is None:
            return 0.0  # the first read was a plain one: start blocking at once
        gap = self._timing.min_change_interval if changed else self._timing.min_interval
        return max(0.0, started + gap - self._clock())

    def _error(self, exc: BaseException) -> float:
        self._failures += 1
        self._index = 0
        if self._failures == 1:
            log.warning("config watch of %s failing: %s", self.prefix, exc)
        self._reset_suspected = True
        self._on_error(self.prefix, exc)
        timing = self._timing
        backoff = JitterBackoff(
            timing.backoff_base, max(timing.backoff_base, timing.backoff_cap), rng=self._rng
        )
        return backoff.delay(self._failures)

    def run(self, stop: threading.Event) -> None:
        """Loop ``poll_once`` until ``stop`` is set."""
        while not stop.is_set():
            delay = self.poll_once()
            if delay > 0:
                stop.wait(delay)
