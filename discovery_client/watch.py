"""One service's blocking-query loop: index rules, rate limit, backoff, stale-on-error.

The rules live in ``WatchState``, a sans-IO state machine: ``begin()`` says which index
to ask for, ``on_success(returned_index, instances)`` / ``on_error(exc)`` take the
outcome and say how long to wait before the next request (None: stop). It calls an
injected ``build`` that turns instances into a Resolution and ``on_change`` with every
new one. Two loops drive it: ``ServiceWatch.run`` on a thread around a blocking
``fetch(index, wait)`` (``ConsulSource``), and an asyncio task around an awaitable one
(``consul_discovery.client.aio``). That keeps the rules written once and testable with a
fake clock:

- Consul's index rules: a missing or < 1 index is treated as 1; an index that goes
  backwards resets ours to 0 (the next query is a plain read, then blocking resumes).
- A response is no proof of change: unless it carried a real membership change, the next
  request waits until ``min_interval`` after the previous one started (so a broken or
  restarting Consul can never make the loop spin); after a real change the next request
  may start ``min_change_interval`` after the previous one (a flapping set stays bounded).
- Errors back off exponentially with equal jitter (``consul_discovery.connection.backoff``), capped.
- Before the first success, an error is cached (``first_error``, for ``resolve()`` to
  raise without asking Consul again) and the watch keeps trying with that backoff: many
  callers of an unresolvable service cost one query per backoff step, not one each.
- After it, an error keeps the last-known-good instances, marked stale, ``fetched_at``
  unchanged so their age keeps growing; the next query after an error is a plain read
  (index 0), since a restarted agent's index may be lower than ours.
- The first answer after an error, or after the index went backwards, may come from an
  agent that restarted empty: it goes through the self-preservation rule
  (``consul_discovery.client.preservation``) before anyone sees it, and while that rule holds
  instances on trust, blocking waits end by the time its window does (``next_wait``).
- An outage is logged twice at warning level (when Consul goes away, and when it is back
  with its duration and the count of failed polls); each failed poll only at debug.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

from consul_discovery.client.health_entries import same_membership
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.preservation import SelfPreservation
from consul_discovery.connection.backoff import JitterBackoff
from consul_discovery.connection.blocking import WatchTiming, next_index

log = logging.getLogger(__name__)

Fetch = Callable[[int, float], tuple[int | None, Sequence[Instance]]]
Build = Callable[[Sequence[Instance], int, float], Resolution]
OnChange = Callable[[Resolution], None]


class WatchState:
    """The cached Resolution of one service and the rules that keep it fresh (no I/O).

    One driver (a thread or an asyncio task) calls ``begin``, does the request, then
    ``on_success`` or ``on_error``; other threads only read ``resolution`` /
    ``first_error`` and wait on ``wait_first``.
    """

    def __init__(
        self,
        service: str,
        build: Build,
        on_change: OnChange,
        *,
        timing: WatchTiming,
        clock: Callable[[], float],
        rng: random.Random,
        preservation: SelfPreservation | None = None,
    ) -> None:
        self.service = service
        self._build = build
        self._on_change = on_change
        self._timing = timing
        self._clock = clock
        self._rng = rng
        self._backoff = JitterBackoff(
            timing.backoff_base, max(timing.backoff_base, timing.backoff_cap), rng=rng
        )
        self._preservation = preservation or SelfPreservation(0.0, clock)
        self._index = 0  # driver only
        self._failures = 0  # driver only: consecutive failed requests
        self._failing_since: float | None = None  # driver only: when an outage began
        self._started = 0.0  # driver only: when the request in progress began
        self._resolution: Resolution | None = None  # written by the driver only
        self._first_error: BaseException | None = None  # written by the driver only
        self._first_done = threading.Event()  # set by the driver after the 1st outcome
        self.requests = 0  # driver only (read by tests/metrics): requests started
        self.errors = 0  # driver only (read by metrics): requests that failed

    @property
    def timing(self) -> WatchTiming:
        """How this watch paces itself."""
        return self._timing

    @property
    def resolution(self) -> Resolution | None:
        """The current Resolution (None until the first successful fetch)."""
        return self._resolution

    @property
    def first_error(self) -> BaseException | None:
        """Why resolving has failed so far (None once a fetch succeeded or before any)."""
        return self._first_error

    @property
    def first_done(self) -> bool:
        """True once the first fetch succeeded or failed."""
        return self._first_done.is_set()

    @property
    def index(self) -> int:
        """The index the next blocking query will send (0: a plain read)."""
        return self._index

    def wait_first(self, timeout: float) -> bool:
        """Block until the first fetch succeeded or failed; False on timeout."""
        return self._first_done.wait(timeout)

    def next_wait(self) -> float:
        """The blocking wait for the next request: the timing's, or less while instances
        are held on trust, so the watch comes back when the suspect window ends."""
        until = self._preservation.window_until
        if until is None:
            return self._timing.wait
        return min(self._timing.wait, max(0.05, until - self._clock()))

    def begin(self) -> int:
        """A request starts now: the index it must send."""
        self._started = self._clock()
        self.requests += 1
        return self._index

    def on_success(self, returned: int | None, registered: Sequence[Instance]) -> float:
        """The request answered: update the cache; seconds to wait before the next one."""
        started = self._started
        recovered = self._failures > 0
        if recovered:
            self._log_recovery(started)
        previous_index = self._index
        self._index = next_index(previous_index, returned)
        if self._index == 0:
            log.info(
                "consul index for %s went backwards (%s -> %s): reset",
                self.service,
                previous_index,
                returned,
            )
        believed, held = self._preservation.apply(
            registered, continuous=not recovered and self._index != 0
        )
        fresh = self._build(believed, returned if returned and returned > 0 else 1, self._clock())
        if held:
            fresh = dataclasses.replace(fresh, held=held)
        old = self._resolution
        self._first_error = None
        if old is None:
            # Listeners first, then published: a later subscriber gets it exactly once.
            self._emit(old, fresh)
            self._resolution = fresh
            self._first_done.set()
            return 0.0  # the first read was a plain one: start blocking right away
        changed = old.stale or not same_membership(old, fresh)
        self._resolution = fresh
        if changed:
            self._emit(old, fresh)
        # Only a real change earns a quick next request.
        quick = changed and not old.stale
        gap = self._timing.min_change_interval if quick else self._timing.min_interval
        return max(0.0, started + gap - self._clock())

    def _log_recovery(self, now: float) -> None:
        since = self._failing_since if self._failing_since is not None else now
        log.warning(
            "consul answering again for %s after %.1fs (%d failed poll(s))",
            self.service,
            max(0.0, now - since),
            self._failures,
        )
        self._failures = 0
        self._failing_since = None

    def on_error(self, exc: BaseException) -> float | None:
        """The request failed: cache the error or serve stale; the backoff before the next."""
        self._failures += 1
        self.errors += 1
        if self._failing_since is None:
            self._failing_since = self._clock()
        old = self._resolution
        log.debug("consul watch of %s: poll %d failed: %r", self.service, self._failures, exc)
        # The agent we reach next may have restarted with a lower index, and a blocking
        # query on an index from its future would hang for the whole wait: read plainly.
        self._index = 0
        if old is None:
            if self._failures == 1:
                log.warning("cannot resolve %s yet (retrying with backoff): %s", self.service, exc)
            self._first_error = exc
            self._first_done.set()
        elif not old.stale:
            stale = dataclasses.replace(old, stale=True, error=f"{type(exc).__name__}: {exc}")
            self._resolution = stale
            log.warning(
                "consul watch of %s failing, serving %d cached instance(s): %s",
                self.service,
                len(old.instances),
                exc,
            )
            self._emit(old, stale)
        return self._backoff.delay(self._failures)

    def _emit(self, old: Resolution | None, new: Resolution) -> None:
        if log.isEnabledFor(logging.DEBUG):
            before = {i.id: i.health for i in old.instances} if old else {}
            after = {i.id: i.health for i in new.instances}
            log.debug(
                "%s membership: +%s -%s health=%s stale=%s panic=%s",
                self.service,
                sorted(after.keys() - before.keys()),
                sorted(before.keys() - after.keys()),
                after,
                new.stale,
                new.panic,
            )
        try:
            self._on_change(new)
        except Exception:
            log.exception("listener of %s failed", self.service)


class ServiceWatch(WatchState):
    """A WatchState driven by a thread around a blocking ``fetch(index, wait)``.

    ``poll_once`` does one request and returns how long to sleep before the next one
    (None: stop). ``run`` loops it on the watch's own thread.
    """

    def __init__(
        self, service: str, fetch: Fetch, build: Build, on_change: OnChange, **state: Any
    ) -> None:
        super().__init__(service, build, on_change, **state)  # WatchState's keywords
        self._fetch = fetch

    def poll_once(self) -> float | None:
        """Do one request; return seconds to sleep before the next, or None to stop."""
        index = self.begin()
        try:
            returned, registered = self._fetch(index, self.next_wait())
        except Exception as exc:  # any failure: the loop must survive it
            return self.on_error(exc)
        return self.on_success(returned, registered)

    def run(self, stop: threading.Event, sleep: Callable[[float], object] | None = None) -> None:
        """Loop ``poll_once`` until ``stop`` is set or the watch ends itself."""
        pause = sleep or stop.wait
        while not stop.is_set():
            delay = self.poll_once()
            if delay is None:
                return
            if delay > 0:
                pause(delay)
