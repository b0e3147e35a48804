"""One service's blocking-query loop: index rules, rate limit, backoff, stale-on-error.

The rules live in ``WatchState``, a sans-IO state machine: ``begin()`` says which index
to ask for, ``on_success(returned_index, instances)`` / ``on_error(exc)`` take the
outcome and say how long to wait before the next request (None: stop). It calls an
injected ``build`` that turns instances into a Resolution and ``on_change`` with every
new one. Two loops drive it: ``ServiceWatch.run`` on a thread around a blocking
``fetch(index, wait)`` (``ConsulSource``), and an asyncio task around an awaitable one
(``discovery_client.aio``). That keeps the rules written once and testable with a
fake clock:

- Consul's index rules: a missing or < 1 index is treated as 1; an index that goes
  backwards resets ours to 0 (the next query is a plain read, then blocking resumes).
- A response is no proof of change: unless it carried a real membership change, the next
  request waits until ``min_interval`` after the previous one started (so a broken or
  restarting Consul can never make the loop spin); after a real change the next request
  may start ``min_change_interval`` after the previous one (a flapping set stays bounded).
- Errors back off exponentially with jitter (``backoff_delay``), capped.
- Before the first success, an error is terminal: the watch stops and keeps the error
  for ``resolve()`` to raise (nothing is cached, so there is nothing to serve).
- After it, an error keeps the last-known-good instances, marked stale, ``fetched_at``
  unchanged so their age keeps growing; the next query after an error is a plain read
  (index 0), since a restarted agent's index may be lower than ours.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from discovery_client.health_entries import same_membership
from discovery_client.instance import Instance, Resolution

log = logging.getLogger(__name__)

Fetch = Callable[[int, float], tuple[int | None, Sequence[Instance]]]
Build = Callable[[Sequence[Instance], int, float], Resolution]
OnChange = Callable[[Resolution], None]


@dataclass(frozen=True, slots=True)
class WatchTiming:
    """How a watch paces itself: blocking wait, idle rate limit and error backoff (seconds)."""

    wait: float = 30.0
    min_interval: float = 1.0
    min_change_interval: float = 0.05
    backoff_base: float = 0.25
    backoff_cap: float = 5.0

    def __post_init__(self) -> None:
        if self.wait <= 0 or self.min_interval < 0 or self.backoff_base <= 0:
            raise ValueError(f"invalid watch timing: {self}")


def next_index(previous: int, returned: int | None) -> int:
    """The index for the next blocking query, following Consul's rules.

    ``returned`` missing or below 1 counts as 1 (index 0 would never block); an index
    lower than ``previous`` means Consul's state was reset (e.g. an agent restarted
    empty), so start over from 0.
    """
    current = returned if returned is not None and returned >= 1 else 1
    return 0 if current < previous else current


def backoff_delay(failures: int, rng: random.Random, base: float, cap: float) -> float:
    """Delay before retry number ``failures`` (>= 1): exponential, capped, half jittered."""
    ceiling = min(cap, base * 2 ** max(0, failures - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


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
    ) -> None:
        self.service = service
        self._build = build
        self._on_change = on_change
        self._timing = timing
        self._clock = clock
        self._rng = rng
        self._index = 0  # driver only
        self._failures = 0  # driver only: consecutive failed requests
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
        """Why the first fetch failed (the watch then stops), else None."""
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

    def begin(self) -> int:
        """A request starts now: the index it must send."""
        self._started = self._clock()
        self.requests += 1
        return self._index

    def on_success(self, returned: int | None, registered: Sequence[Instance]) -> float:
        """The request answered: update the cache; seconds to wait before the next one."""
        started = self._started
        self._failures = 0
        previous_index = self._index
        self._index = next_index(previous_index, returned)
        if self._index == 0:
            log.info(
                "consul index for %s went backwards (%s -> %s): reset",
                self.service,
                previous_index,
                returned,
            )
        fresh = self._build(registered, returned if returned and returned > 0 else 1, self._clock())
        old = self._resolution
        changed = old is None or old.stale or not same_membership(old, fresh)
        self._resolution = fresh
        if old is None:
            self._first_done.set()
        if changed:
            self._emit(old, fresh)
        if old is None:
            return 0.0  # the first read was a plain one: start blocking right away
        # Only a real change earns a quick next request.
        quick = changed and not old.stale
        gap = self._timing.min_change_interval if quick else self._timing.min_interval
        return max(0.0, started + gap - self._clock())

    def on_error(self, exc: BaseException) -> float | None:
        """The request failed: serve stale (or stop before any success); the backoff."""
        self._failures += 1
        self.errors += 1
        old = self._resolution
        if old is None:
            self._first_error = exc
            self._first_done.set()
            return None
        # The agent we reach next may have restarted with a lower index, and a blocking
        # query on an index from its future would hang for the whole wait: read plainly.
        self._index = 0
        stale = dataclasses.replace(old, stale=True, error=f"{type(exc).__name__}: {exc}")
        self._resolution = stale
        if not old.stale:
            log.warning(
                "consul watch of %s failing, serving %d cached instance(s): %s",
                self.service,
                len(old.instances),
                exc,
            )
            self._emit(old, stale)
        return backoff_delay(
            self._failures, self._rng, self._timing.backoff_base, self._timing.backoff_cap
        )

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
        self,
        service: str,
        fetch: Fetch,
        build: Build,
        on_change: OnChange,
        *,
        timing: WatchTiming,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        super().__init__(service, build, on_change, timing=timing, clock=clock, rng=rng)
        self._fetch = fetch

    def poll_once(self) -> float | None:
        """Do one request; return seconds to sleep before the next, or None to stop."""
        index = self.begin()
        try:
            returned, registered = self._fetch(index, self._timing.wait)
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
