"""The blocking-query watch: one I/O-free rule set for every Consul watch.

Every watch here (a service's health, a KV prefix, and the ones to come: discovery chain,
Connect leaf certificate and CA roots, intentions) is a ``WatchState`` around a
*resource* (``consul_connection.resource``): what to ask Consul and what an answer
means. ``WatchState`` owns the rules, with an injected clock and random source and no
I/O:

- Consul's index rules (``consul_connection.blocking.next_index``): a missing or < 1
  index counts as 1; an index that goes backwards resets ours to 0 (a plain read, then
  blocking resumes). After an error the next read is a plain one too: the agent we reach
  next may have restarted with a lower index, and blocking on an index from its future
  would hang for the whole wait.
- Pacing (``WatchTiming``): an answer is no proof of change. Unless it carried a real
  change, the next request starts ``min_interval`` after the previous one started (a
  broken or restarting Consul can never make the loop spin); after a real change it may
  start ``min_change_interval`` after (a flapping value stays bounded). So may the poll
  after an answer whose index moved on with nothing we see changed, while an allowance
  of ``settle_burst`` such polls lasts (refilled at one per ``min_interval``): Consul
  is in motion (restarted instances register, their checks report critical, then pass
  within the second: several index moves), and waiting ``min_interval`` there delayed
  their return by up to a second. With the allowance spent they wait ``min_interval``.
  After the first answer (a plain read) blocking starts at once.
- Errors back off exponentially with equal jitter (``consul_connection.backoff``), capped.
- Before the first answer an error is cached (``first_error``: callers raise it without
  asking Consul again) and the watch keeps retrying with that backoff: many callers of an
  unresolvable resource cost one request per backoff step, not one each. With
  ``unresolved_ttl`` set, such a watch stops once no caller has asked (``touch``) for that
  long (a mistyped service name does not poll Consul forever); its owner starts a new one
  on the next ask.
- After it, an error keeps the last good value (``stale``; the resource may mark it, e.g.
  a Resolution's ``stale``/``error``), and listeners hear about that once.
- **A 429 is the agent protecting itself** (``consul_connection.throttle``): a longer
  backoff floor, the index kept (the next answer continues the view), the value served
  and marked stale, a first resolve kept waiting within its timeout instead of failed,
  counted in ``rate_limited``, and logged once per *source* and episode (``ThrottleLog``)
  instead of once per watch.
- An outage is logged twice at warning level: when it begins, and when Consul answers
  again (with its duration and the number of failed polls); each failed poll at debug.
  A watch that never had a value logs its first failure at info only: its callers get
  the error itself.
- **Suspect answers.** The first answer after an error, or after the index went
  backwards, may come from an agent that restarted empty: ``settle`` gets
  ``continuous=False`` for it, and the resource decides what to believe (the discovery
  client's self-preservation window; the KV watch's "an emptied prefix after an outage
  is held"). While a resource holds something on trust (``window_until``) blocking waits
  end by the time its window does (``next_wait``).

Drivers (``consul_connection.watch_drivers``) do the I/O: ``WatchThread`` (a thread
around a blocking ``send``, requests) and ``WatchTask`` (an asyncio task, httpx).

**Adding a watch** is one small class (request + decode) and two lines to drive it::

    ERRORS = ErrorKinds(unavailable=MeshUnavailable, refused=MeshError, denied=MeshDenied)

    class CARoots(Resource[dict, dict]):
        def __init__(self, connection: ConsulConnection) -> None:
            super().__init__("ca-roots", "the Connect CA roots", connection.address, ERRORS)

        def request(self, poll: Poll) -> Request:
            return Request("/v1/agent/connect/ca/roots", poll.params(), poll.timeout(10.0))

        def decode(self, response: Response) -> dict:
            return response.json()

    state = WatchState(CARoots(connection), on_change=swap_roots)
    WatchThread(state, SessionSender(connection), name="ca-roots").start()

``interpret`` already maps every refusal (403, 5xx, bad filter, transport failures) to
the ``ErrorKinds`` given; override ``exchange`` for a poll that needs more than one
request, ``settle``/``same``/``mark_stale``/``window_until`` for the rules above.
Whoever owns a watch also owns its end and its forks: ``stop()`` it and
``SessionSender.interrupt()`` (or ``await WatchTask.aclose()``) to close it at once, and
register ``after_fork_in_child`` (``consul_connection.forking``) to call
``WatchThread.restart_in_child(new_send)`` in a forked child (see ``ConsulSource``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Generic

from consul_discovery.connection.backoff import JitterBackoff
from consul_discovery.connection.blocking import WatchTiming, next_index
from consul_discovery.connection.exchange import TransportError
from consul_discovery.connection.resource import A, Answer, Poll, Resource, V
from consul_discovery.connection.throttle import ThrottleLog, is_rate_limited

log = logging.getLogger(__name__)


class WatchState(Generic[A, V]):
    """One resource's last good value and the rules that keep it fresh (no I/O).

    One driver calls ``begin``, sends, then ``on_answer`` / ``on_error`` (each returns
    the seconds to wait before the next poll; None: stop). Other threads read ``value``
    / ``first_error``, wait on ``wait_first`` and call ``touch``.
    """

    def __init__(
        self,
        resource: Resource[A, V],
        on_change: Callable[[V], None] = lambda _value: None,
        *,
        timing: WatchTiming | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        unresolved_ttl: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        throttle: ThrottleLog | None = None,
    ) -> None:
        self.resource = resource
        self._on_change = on_change
        self._on_error = on_error
        self._throttle = throttle
        self._timing = timing = timing or WatchTiming()
        self._clock = clock
        self._backoff = JitterBackoff(
            timing.backoff_base, max(timing.backoff_base, timing.backoff_cap), rng=rng
        )
        self._throttle_backoff = JitterBackoff(
            timing.throttle_base, max(timing.throttle_base, timing.throttle_cap), rng=rng
        )
        if unresolved_ttl is not None and unresolved_ttl <= 0:
            raise ValueError(f"unresolved_ttl must be > 0 seconds or None; got {unresolved_ttl}")
        self._unresolved_ttl = unresolved_ttl  # set at start; pin() may clear it (any thread)
        self._index = 0  # driver only
        self._failures = 0  # driver only: consecutive failed polls
        self._failing_since: float | None = None  # driver only: when the outage began
        self._started = 0.0  # driver only: when the poll in progress began
        self._stale = False  # driver only: the last poll failed and value is last-known-good
        self._marked = False  # driver only: the published value is the resource's stale mark
        # driver only: quick polls left for answers whose index moved with no change
        # (a token bucket: settle_burst, refilled at one per min_interval), and when
        # it was last refilled
        self._settle_tokens = float(timing.settle_burst)
        self._settle_at = clock()
        self._value: V | None = None  # written by the driver, read by any thread
        self._first_error: BaseException | None = None  # written by the driver, read by any
        self._first_done = threading.Event()  # set by the driver after the 1st outcome
        self._asked_at = clock()  # written by any thread (touch; a float store), read by driver
        self._throttled = 0  # driver only: consecutive polls the agent rate-limited
        self.requests = 0  # driver only (read by stats): polls started
        self.errors = 0  # driver only (read by stats): polls that failed
        self.rate_limited = 0  # driver only (read by stats): polls answered 429

    @property
    def timing(self) -> WatchTiming:
        """How this watch paces itself."""
        return self._timing

    @property
    def value(self) -> V | None:
        """The last good value (None until the first answer)."""
        return self._value

    @property
    def stale(self) -> bool:
        """True while polls fail and ``value`` is the last good one."""
        return self._stale

    @property
    def first_error(self) -> BaseException | None:
        """Why the watch has no value yet (None once it has one, or before any outcome)."""
        return self._first_error

    @property
    def first_done(self) -> bool:
        """True once the first poll answered or failed."""
        return self._first_done.is_set()

    @property
    def index(self) -> int:
        """The index the next poll sends (0: a plain read)."""
        return self._index

    def wait_first(self, timeout: float) -> bool:
        """Block until the first poll answered or failed; False on timeout."""
        return self._first_done.wait(timeout)

    def touch(self) -> None:
        """A caller asked for the value now (keeps a watch with no value yet alive)."""
        self._asked_at = self._clock()

    def pin(self, stand_in: V | None = None) -> None:
        """Callers depend on this watch without asking again (they were handed
        ``stand_in``, e.g. a cold-start snapshot): it never stops for want of a caller,
        and a resource that can ``remember`` the stand-in is told of it."""
        self._unresolved_ttl = None  # any thread: a single store, read by the driver
        if stand_in is not None:
            self.resource.remember(stand_in)

    def now(self) -> float:
        """The watch's clock (monotonic seconds), for ages comparable with its values."""
        return self._clock()

    def next_wait(self) -> float:
        """The next poll's blocking wait: the timing's, or less while the resource holds
        something on trust, so the watch comes back when that window ends."""
        until = self.resource.window_until
        if until is None:
            return self._timing.wait
        return min(self._timing.wait, max(0.05, until - self._clock()))

    def seed(self, value: V) -> None:
        """Start from ``value`` obtained elsewhere (a relay's last answer): it is served at
        once, no listener is called, and the first poll is a plain read."""
        self._value = value
        self._first_error = None
        self._first_done.set()

    def begin(self) -> Poll:
        """A poll starts now: what it must ask."""
        self._started = self._clock()
        self.requests += 1
        return Poll(self._index, self.next_wait(), self._value is not None)

    def on_answer(self, answer: Answer[A]) -> float:
        """The poll answered: publish a change if any; seconds to wait before the next."""
        started = self._started
        if self._throttled:
            self._throttled = 0
            if self._throttle is not None:
                self._throttle.answered(self.resource.name)
        recovered = self._failures > 0
        if recovered:
            self._log_recovery(started)
        previous_index = self._index
        self._index = next_index(previous_index, answer.index)
        if self._index == 0:
            log.info(
                "consul index for %s went backwards (%s -> %s): reset",
                self.resource.name,
                previous_index,
                answer.index,
            )
        index = answer.index if answer.index and answer.index > 0 else 1
        old = self._value
        continuous = not recovered and self._index != 0
        fresh = self.resource.settle(
            answer.value, index, old, continuous=continuous, now=self._clock()
        )
        self._first_error = None
        self._stale = False
        if old is None:
            # Listeners first, then published: a later subscriber gets it exactly once.
            self._emit(fresh)
            self._value = fresh
            self._first_done.set()
            return 0.0  # the first read was a plain one: start blocking right away
        marked, self._marked = self._marked, False
        changed = marked or not self.resource.same(old, fresh)
        self._value = fresh
        if changed:
            self._emit(fresh)
        # A real change earns a quick next poll (not the end of an outage). So does an
        # answer whose index moved on without a change we see, while the settle
        # allowance lasts: something is in motion (instances register, their checks
        # report, then pass: several index moves within a second). The allowance refills
        # at one per min_interval, so index churn cannot spin the loop (at most one extra
        # poll per min_interval in the long run).
        moved = previous_index != 0 and self._index > previous_index
        settling = not changed and moved and self._take_settle_token()
        quick = (changed and not marked) or settling
        gap = self._timing.min_change_interval if quick else self._timing.min_interval
        return max(0.0, started + gap - self._clock())

    def _take_settle_token(self) -> bool:
        timing = self._timing
        now = self._clock()
        if timing.min_interval > 0:
            refill = (now - self._settle_at) / timing.min_interval
            self._settle_tokens = min(float(timing.settle_burst), self._settle_tokens + refill)
        self._settle_at = now
        if self._settle_tokens < 1.0:
            return False
        self._settle_tokens -= 1.0
        return True

    def on_error(self, exc: BaseException) -> float | None:
        """The poll failed: cache the error or serve stale; the backoff before the next
        poll, or None when a watch with no value has gone unasked for ``unresolved_ttl``."""
        if is_rate_limited(exc):
            return self._on_rate_limited(exc)
        self._failures += 1
        self.errors += 1
        if self._failing_since is None:
            self._failing_since = self._clock()
        name = self.resource.name
        log.debug("consul watch of %s: poll %d failed: %r", name, self._failures, exc)
        self._index = 0
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("error listener of %s failed", name)
        old = self._value
        if old is None:
            if self._failures == 1:  # callers get the error itself (first_error)
                log.info("consul watch of %s has no answer yet (retrying): %s", name, exc)
            self._first_error = exc
            self._first_done.set()
            ttl = self._unresolved_ttl
            if ttl is not None and self._clock() - self._asked_at >= ttl:
                log.info("stopped watching %s: no caller asked for it in %.0fs", name, ttl)
                return None
        elif not self._stale:
            self._stale = True
            summary = self.resource.summary(old)
            log.warning("consul watch of %s failing, serving %s: %s", name, summary, exc)
            marked = self.resource.mark_stale(old, exc)
            if marked is not None:
                self._value, self._marked = marked, True
                self._emit(marked)
        return self._backoff.delay(self._failures)

    def _on_rate_limited(self, exc: BaseException) -> float | None:
        """The agent answered 429: keep the index and the value (marked stale), keep a
        first resolve waiting, back off from the longer floor (see the module)."""
        self._throttled += 1
        self.rate_limited += 1
        self.errors += 1
        name = self.resource.name
        if self._throttle is not None:
            self._throttle.throttled(name, exc)
        elif self._throttled == 1:
            log.warning("consul watch of %s rate-limited by the agent (backing off): %s", name, exc)
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                log.exception("error listener of %s failed", name)
        old = self._value
        if old is None:
            self._first_error = exc  # first_done stays unset: a resolve waits its timeout out
            ttl = self._unresolved_ttl
            if ttl is not None and self._clock() - self._asked_at >= ttl:
                log.info("stopped watching %s: no caller asked for it in %.0fs", name, ttl)
                if self._throttle is not None:
                    self._throttle.forget(name)
                return None
        elif not self._stale:
            self._stale = True
            marked = self.resource.mark_stale(old, exc)
            if marked is not None:
                self._value, self._marked = marked, True
                self._emit(marked)
        return self._throttle_backoff.delay(self._throttled)

    def on_transport_error(self, error: TransportError) -> float | None:
        """The poll got no answer at all: ``on_error`` with the resource's mapped error."""
        return self.on_error(self.resource.failure(error))

    def after_fork(self) -> None:
        """In a forked child: replace what a parent thread may have held (no I/O)."""
        done, self._first_done = self._first_done.is_set(), threading.Event()
        if done:
            self._first_done.set()

    def _log_recovery(self, now: float) -> None:
        since = self._failing_since if self._failing_since is not None else now
        log.warning(
            "consul answering again for %s after %.1fs (%d failed poll(s))",
            self.resource.name,
            max(0.0, now - since),
            self._failures,
        )
        self._failures = 0
        self._failing_since = None

    def _emit(self, value: V) -> None:
        try:
            self._on_change(value)
        except Exception:
            log.exception("listener of %s failed", self.resource.name)
