"""The Balancer: turns each complete Resolution into a picker and keeps per-instance load.

After grpc-go's balancer (state in, picker out, swapped whole) and Finagle's Balancer
(node objects, and so their load history, survive membership updates). ``update`` runs
on the source's thread, ``pick``/``begin``/``finish`` on request threads. Picks read one
reference and never take the lock; the lock guards membership, ejection and rebuilds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Collection

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.dial import Dial
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.load import DEFAULT_DECAY_TIME, Endpoint, InstanceLoad
from consul_discovery.client.pauses import NO_PAUSES, PauseMeter
from consul_discovery.client.picker import EmptyPicker, Picker, build_picker
from consul_discovery.client.stats import InstanceStats

log = logging.getLogger(__name__)


class Balancer:
    """Balances calls to one service over its current instances."""

    def __init__(
        self,
        service: str,
        config: ServiceConfig | None = None,
        *,
        ejection: EjectionPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        decay_time: float = DEFAULT_DECAY_TIME,
        dial: Callable[[Instance], Dial] = Dial.of,
        pauses: PauseMeter = NO_PAUSES,
    ) -> None:
        self.service = service
        self._dial = dial  # how to reach an instance (.dial); replaced under _lock by redial
        # Seconds the process has been stopped (GC) so far: not part of any latency.
        self._pauses = pauses
        self.config = config or ServiceConfig()
        # The caller's zone (None: no preference): the config's, or the agent's once read
        # (set_zone). Under _lock.
        self._zone: str | None = self.config.zone if isinstance(self.config.zone, str) else None
        self.ejection = ejection or EjectionPolicy()
        self._clock = clock
        self._rng = rng or random.Random()
        self._decay_time = decay_time
        self._lock = threading.Lock()
        self._loads: dict[str, InstanceLoad] = {}  # under _lock (update and ejection)
        self._endpoints: tuple[Endpoint, ...] = ()  # under _lock
        # The Resolution the current picker was built from: written under _lock, read
        # lock-free (readiness: None until the first one; stats).
        self.resolution: Resolution | None = None
        self._ejections_total = 0  # under _lock
        # Replaced whole under _lock; read without it by every pick.
        self._picker: Picker = EmptyPicker(service, "not resolved yet")

    # ---- state in -------------------------------------------------------------------

    def update(self, resolution: Resolution) -> None:
        """Adopt a new complete Resolution: keep load state by id and swap in a new picker.

        A Resolution older than the current one (by ``fetched_at``) is ignored. An
        instance that is new, came back after leaving the set, or changed address gets
        fresh state, which also ends any ejection (Consul vouches for it again).
        """
        with self._lock:
            current = self.resolution
            if current is not None and resolution.fetched_at < current.fetched_at:
                log.debug(
                    "%s: ignoring an older resolution (index %d)", self.service, resolution.index
                )
                return
            now = self._clock()
            old_instances = {e.instance.id: e.instance for e in self._endpoints}
            loads: dict[str, InstanceLoad] = {}
            endpoints: list[Endpoint] = []
            for inst in resolution.instances:
                if inst.id in loads:
                    continue  # a duplicate id: the first one wins
                load = self._loads.get(inst.id)
                old = old_instances.get(inst.id)
                if load is None or old is None or _moved(old, inst):
                    load = InstanceLoad(inst.id, now=now, decay_time=self._decay_time)
                loads[inst.id] = load
                endpoints.append(Endpoint(inst, load, self._dial(inst)))
            self._log_membership(old_instances, loads, resolution)
            self._loads = loads
            self._endpoints = tuple(endpoints)
            self._rebuild(now, resolution)
            # Published after its picker: a call that reads it lock-free (readiness) and
            # picks at once must not find the picker of before ("not resolved yet").
            self.resolution = resolution

    def redial(self, dial: Callable[[Instance], Dial] | None = None) -> None:
        """Make every endpoint's Dial again (the caller's TLS identity changed): loads
        kept, a new picker swapped in; attempts already picked finish on their Dial."""
        with self._lock:
            if dial is not None:
                self._dial = dial
            self._endpoints = tuple(
                Endpoint(e.instance, e.load, self._dial(e.instance)) for e in self._endpoints
            )
            self._rebuild(self._clock())

    def set_policy(self, policy: str) -> None:
        """Balance by ``policy`` from now on (a chain's resolver chose it): a new picker,
        loads kept; ValueError for a policy ``ServiceConfig`` refuses."""
        with self._lock:  # two switches at once: the last one wins, whole
            self.config = dataclasses.replace(self.config, policy=policy)
            self._rebuild(self._clock())
        log.info("%s: balancing by %s", self.service, policy)

    def set_zone(self, zone: str | None) -> None:
        """Prefer ``zone`` from now on (None: no preference): a new picker, loads kept."""
        with self._lock:
            if zone == self._zone:
                return
            self._zone = zone
            self._rebuild(self._clock())
        log.info("%s: calls prefer zone %r", self.service, zone)

    def _log_membership(
        self, old: dict[str, Instance], new: dict[str, InstanceLoad], res: Resolution
    ) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        if added or removed or res.stale:
            log.debug(
                "%s: membership at index %d: +%s -%s (%d instances%s%s)",
                self.service,
                res.index,
                added,
                removed,
                len(new),
                ", stale: " + str(res.error) if res.stale else "",
                ", panic mode" if res.panic else "",
            )

    def _rebuild(self, now: float, resolution: Resolution | None = None) -> None:
        # Caller holds _lock. ``resolution``: the one being adopted (else the current).
        eligible: list[Endpoint] = []
        next_return = math.inf
        for e in self._endpoints:
            if e.load.is_ejected(now):
                next_return = min(next_return, e.load.ejected_until or math.inf)
            else:
                eligible.append(e)
        if not eligible and self._endpoints:
            log.warning("%s: every instance is ejected; ignoring ejection", self.service)
            eligible = list(self._endpoints)
        # A plain target skips the Connect-native instances (mTLS only: a plain request
        # cannot reach them) while any other serves, as in a move into the mesh; with
        # only those left, a pick of one makes the shells say to call with connect=True.
        usable = [e for e in eligible if e.dial.refusal is None]
        if usable and len(usable) < len(eligible):
            eligible = usable
        zone = self._zone
        if zone is not None and eligible:  # prefer the caller's zone (locality.py)
            from consul_discovery.client.locality import LocalityPicker

            self._picker = LocalityPicker(
                self.config.policy, self.service, eligible, zone,
                rng=self._rng, clock=self._clock, expires_at=next_return,
            )  # fmt: skip
            return
        self._picker = build_picker(
            self.config.policy,
            self.service,
            eligible,
            rng=self._rng,
            clock=self._clock,
            expires_at=next_return,
            empty_detail=self._empty_detail(self.resolution if resolution is None else resolution),
        )

    def _empty_detail(self, res: Resolution | None) -> str:
        if res is None:
            return "not resolved yet"
        if res.stale:
            return f"Consul unreachable ({res.error}) and the last known set is empty"
        if self.config.connect:  # /v1/health/connect lists only Connect-capable instances
            return (
                "Consul reports no passing Connect-capable instance (a service none of whose "
                "instances is Connect-native or has a sidecar proxy has none: call it "
                "without connect=True)"
            )
        return "Consul reports no passing instance"

    # ---- picks and outcomes ---------------------------------------------------------

    def pick(self, exclude: Collection[str] = (), hash_key: int | None = None) -> Endpoint:
        """Choose an endpoint without touching the network; raise NoHealthyInstanceError.

        ``exclude``: ids this call already tried; ``hash_key``: the call's request hash
        (consistent-hashing policies only).
        """
        picker = self._picker
        if picker.expires_at <= self._clock():
            picker = self._expire_ejections()
        return picker.pick(exclude, hash_key)

    def _expire_ejections(self) -> Picker:
        with self._lock:
            now = self._clock()
            if self._picker.expires_at <= now:
                log.debug("%s: an ejection ended; rebuilding the picker", self.service)
                self._rebuild(now)
            return self._picker

    def start(self, hash_key: int | None = None) -> tuple[Endpoint, float]:
        """A call's first pick counted as started: ``pick`` (nothing to exclude) and
        ``begin`` at once; the endpoint and its start time for ``answered``/``finish``."""
        now = self._clock()
        picker = self._picker
        if picker.expires_at <= now:
            picker = self._expire_ejections()
        endpoint = picker.choose(hash_key)
        endpoint.load.begin(False)
        return endpoint, now - self._pauses.total

    def begin(self, endpoint: Endpoint, *, retry: bool = False) -> float:
        """Count a call starting on ``endpoint``; return its start time for ``finish``
        (on a clock that stands still while the process is stopped in GC)."""
        endpoint.load.begin(retry)
        return self._clock() - self._pauses.total

    def answered(self, endpoint: Endpoint, started: float, failed: bool) -> None:
        """Count a call on ``endpoint`` ending with an answer (its status and headers came
        back): the time since ``started`` is its latency; ``failed``: its own 5xx."""
        now = self._clock()
        elapsed = now - self._pauses.total - started  # GC stops: nobody's latency
        streak = endpoint.load.finish(now, elapsed if elapsed > 0.0 else 0.0, failed)
        if failed and self.ejection.enabled and streak >= self.ejection.consecutive_failures:
            self._consider_ejection(endpoint.load, now)

    def finish(
        self,
        endpoint: Endpoint,
        started: float,
        *,
        failed: bool,
        responded: bool,
        lower_bound: bool = False,
    ) -> None:
        """Count a call ending: feed the latency metric and the outlier detector.

        ``failed``: a connect error, timeout or 5xx. ``responded``: an answer's status and
        headers came back: the time since ``started`` is the instance's latency
        (``answered``). ``lower_bound``: no answer, but the request may have reached the
        instance (a read timeout, a cancelled attempt): the time since ``started`` is a
        lower bound on its latency, which only ever raises the estimate.
        """
        if responded:
            self.answered(endpoint, started, failed)
            return
        now = self._clock()
        bound = max(0.0, now - self._pauses.total - started) if lower_bound else None
        streak = endpoint.load.finish(now, None, failed=failed, at_least=bound)
        if failed and self.ejection.enabled and streak >= self.ejection.consecutive_failures:
            self._consider_ejection(endpoint.load, now)

    def _consider_ejection(self, load: InstanceLoad, now: float) -> None:
        policy = self.ejection
        with self._lock:
            if self._loads.get(load.id) is not load or load.is_ejected(now):
                return
            ejected = sum(1 for e in self._endpoints if e.load.is_ejected(now))
            if ejected >= policy.max_ejected(len(self._endpoints)):
                log.debug("%s: not ejecting %s: ejection cap reached", self.service, load.id)
                return
            if load.ejected_until is not None and now - load.ejected_until > policy.max_time:
                load.ejections = 0
            load.ejections += 1
            duration = policy.duration(load.ejections)
            load.ejected_until = now + duration
            with load.lock:
                load.consecutive_failures = 0
            self._ejections_total += 1
            log.info("%s: ejected %s for %.1fs", self.service, load.id, duration)
            self._rebuild(now)

    # ---- inspection -----------------------------------------------------------------

    def load_of(self, instance_id: str) -> InstanceLoad | None:
        """The load state kept for ``instance_id`` (None if not a current member)."""
        return self._loads.get(instance_id)

    @property
    def ejections(self) -> int:
        """Outlier ejections made so far."""
        return self._ejections_total

    def instance_stats(self, now: float) -> tuple[InstanceStats, ...]:
        """One InstanceStats per instance of the current set, in its order."""
        stats = []
        for e in self._endpoints:
            ld, inst = e.load, e.instance
            stats.append(
                InstanceStats(
                    id=inst.id,
                    address=f"{e.dial.host}:{e.dial.port}",
                    health=inst.health,
                    weight=inst.weight,
                    picks=ld.picks,
                    in_flight=ld.in_flight,
                    failures=ld.failures,
                    consecutive_failures=ld.consecutive_failures,
                    retries=ld.retries,
                    ejections=ld.ejections,
                    ejected=ld.is_ejected(now),
                    ejected_for=max(0.0, (ld.ejected_until or now) - now),
                    latency_ewma=ld.latency(now),
                )
            )
        return tuple(stats)


def _moved(old: Instance, new: Instance) -> bool:
    return (old.address, old.port) != (new.address, new.port)
