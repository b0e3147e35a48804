"""One service's watch: the health query on the shared blocking-query rules.

``HealthWatch`` is the resource both Consul sources watch, one per ``WatchKey`` (a
Target plus the config fields that shape its Resolution). The rules (index, pacing,
backoff, first error cached, stale-on-error, outage logging) are
``consul_connection.watch.WatchState``'s; the query and what answers mean are
``health_query``'s. What is particular to a service:

- the published value is a ``Resolution`` built from every registered instance
  (``health_entries.build_resolution``: critical ones left out, panic mode);
- only a change of membership, health, panic or held set is a change
  (``same_membership``): an unchanged poll still refreshes ``fetched_at``;
- an error marks the last good Resolution ``stale`` with the error's class and message,
  ``fetched_at`` unchanged so its age keeps growing;
- a suspect answer (after an error or an index reset) goes through self-preservation
  (``consul_discovery.client.preservation``) before anyone sees it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable

from consul_discovery.client.health_entries import (
    InstanceCache,
    build_resolution,
    same_membership,
)
from consul_discovery.client.health_query import (
    DISCOVERY_ERRORS,
    QueryOptions,
    instances_exchange,
    what,
)
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.preservation import SelfPreservation
from consul_discovery.client.source import WatchKey
from consul_discovery.connection.blocking import WatchTiming
from consul_discovery.connection.exchange import Exchange
from consul_discovery.connection.resource import Answer, Poll, Resource
from consul_discovery.connection.server_reads import LastRead, read_meta
from consul_discovery.connection.throttle import ThrottleLog
from consul_discovery.connection.watch import WatchState

log = logging.getLogger(__name__)

Registered = tuple[Instance, ...]
HealthState = WatchState[Registered, Resolution]


class HealthWatch(Resource[Registered, Resolution]):
    """The health of one WatchKey's instances, as a watched resource (no I/O)."""

    def __init__(
        self,
        key: WatchKey,
        address: str,
        options: QueryOptions,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(str(key.target), what(key.target), address, DISCOVERY_ERRORS)
        self.key = key
        self._options = options
        self._preservation = SelfPreservation(key.vanish_grace, clock)  # driver only
        self._instances = InstanceCache()  # driver only: unchanged entries keep their Instance
        self.last_read: LastRead | None = None  # written by the driver, read by stats

    def exchange(self, poll: Poll) -> Exchange[Answer[Registered]]:
        """The health query, and the catalog check while nothing is resolved; notes which
        server answered the health query, and its staleness headers (``last_read``)."""
        inner = instances_exchange(
            self.key.target, poll, self._options, self.address, self._instances
        )
        request = next(inner)
        response = yield request
        self.last_read = LastRead(response.server, read_meta(response.headers))
        while True:
            try:
                request = inner.send(response)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            response = yield request

    def settle(
        self,
        answer: Registered,
        index: int,
        previous: Resolution | None,
        *,
        continuous: bool,
        now: float,
    ) -> Resolution:
        """Self-preservation, then the Resolution to balance over."""
        believed, held = self._preservation.apply(answer, continuous=continuous)
        target = self.key.target
        fresh = build_resolution(
            target.service, believed, index, now, self.key.panic_threshold, target.only_passing
        )
        if held:
            fresh = dataclasses.replace(fresh, held=held)
        if log.isEnabledFor(logging.DEBUG):
            _log_membership(self.name, previous, fresh)
        return fresh

    def remember(self, stand_in: Resolution) -> None:
        """Callers were handed ``stand_in`` (a snapshot) before any live answer: it is
        what self-preservation holds if Consul's first answer forgot instances."""
        self._preservation.know(stand_in.instances)

    def same(self, old: Resolution, new: Resolution) -> bool:
        """Same instances, health, panic and held set."""
        return same_membership(old, new)

    def mark_stale(self, value: Resolution, error: BaseException) -> Resolution:
        """The last good Resolution, stale, saying why (``error``'s class and message)."""
        return dataclasses.replace(value, stale=True, error=f"{type(error).__name__}: {error}")

    @property
    def window_until(self) -> float | None:
        """When self-preservation's suspect window ends (None: none open)."""
        return self._preservation.window_until

    def summary(self, value: Resolution) -> str:
        """ "N cached instance(s)"."""
        return f"{len(value.instances)} cached instance(s)"


def health_state(
    key: WatchKey,
    address: str,
    on_change: Callable[[Resolution], None],
    *,
    options: QueryOptions | None = None,
    timing: WatchTiming | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    unresolved_ttl: float | None = None,
    throttle: ThrottleLog | None = None,
) -> HealthState:
    """A WatchState of ``key``'s health (what both sources drive); ``throttle`` is the
    source's rate-limit episode log (one line per source, not per watch)."""
    resource = HealthWatch(key, address, options or QueryOptions(), clock)
    return WatchState(
        resource,
        on_change,
        timing=timing,
        clock=clock,
        rng=rng,
        unresolved_ttl=unresolved_ttl,
        throttle=throttle,
    )


def _log_membership(name: str, old: Resolution | None, new: Resolution) -> None:
    before = {i.id: i.health for i in old.instances} if old else {}
    after = {i.id: i.health for i in new.instances}
    if before == after and (old is None or (old.panic, old.held) == (new.panic, new.held)):
        return
    log.debug(
        "%s membership: +%s -%s health=%s panic=%s held=%s",
        name,
        sorted(after.keys() - before.keys()),
        sorted(before.keys() - after.keys()),
        after,
        new.panic,
        new.held,
    )


__all__ = ["HealthState", "HealthWatch", "Registered", "health_state"]
