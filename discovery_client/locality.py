"""Zone-aware routing: prefer the caller's own zone, spill to others only when it is short.

After Envoy's zone-aware routing (``upstream/load_balancer_impl.cc``). Each zone's share
of the service's *healthy* capacity (sum of Consul weights) is compared with its share
of the *callers* (where the calls come from; by default, an equal share per zone the
service has instances in, which is right when callers are spread like the service):

- the local zone holds at least its callers' share: every call stays local;
- otherwise the local zone takes calls in proportion to what it holds
  (``healthy share / callers' share``), and the deficit spills to the other zones in
  proportion to their spare capacity (``healthy share - callers' share``, where positive),
  so no zone is pushed past its own share;
- the local zone has no healthy instance, or the caller has no zone: the other zones
  (all instances) take every call. A call another zone could serve never fails: a pick
  whose zone has nothing left (every instance there already tried) picks among all.

``zone_shares`` is the rule (pure); ``LocalityPicker`` applies it over a snapshot, with
one picker of the service's policy per zone, built with the family's ``build_picker``,
so weights, load and retries-exclude work within a zone exactly as without zones.
Consistent-hash policies are not combined with zones (as in Envoy): keys would move
between zones whenever a zone's health changes.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import accumulate

from consul_discovery.client.hashing import hash_weights
from consul_discovery.client.load import Endpoint
from consul_discovery.client.picker import Picker, build_picker

HASH_POLICIES = frozenset({"ring_hash", "maglev"})


def zone_shares(
    local: str,
    capacity: Mapping[str, float],
    callers: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The probability of sending a call from zone ``local`` to each zone.

    ``capacity``: each zone's healthy capacity (sum of Consul weights; 0 for a zone that
    has instances but none healthy). ``callers``: each zone's share of the callers (any
    scale; default: equal per zone in ``capacity``). Zones without capacity get nothing.
    """
    total = sum(max(0.0, c) for c in capacity.values())
    if total <= 0:
        return {}
    healthy = {z: max(0.0, c) / total for z, c in capacity.items()}
    if not local or healthy.get(local, 0.0) <= 0:
        return _spread({z: h for z, h in healthy.items() if z != local and h > 0})
    if callers is None:
        callers = dict.fromkeys(capacity, 1.0)
    caller_total = sum(max(0.0, c) for c in callers.values())
    wanted = {z: max(0.0, c) / caller_total for z, c in callers.items()} if caller_total else {}
    local_wanted = wanted.get(local, 0.0)
    if local_wanted <= 0 or healthy[local] >= local_wanted:
        return {local: 1.0}
    stay = healthy[local] / local_wanted
    spare = {
        z: healthy[z] - wanted.get(z, 0.0)
        for z in healthy
        if z != local and healthy[z] - wanted.get(z, 0.0) > 0
    }
    if not spare:  # nobody has spare capacity: spill in proportion to what each holds
        spare = {z: h for z, h in healthy.items() if z != local and h > 0}
    spill = _spread(spare)
    shares = {local: stay}
    shares.update({z: (1.0 - stay) * p for z, p in spill.items()})
    return shares


def _spread(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {z: w / total for z, w in weights.items()} if total > 0 else {}


class LocalityPicker:
    """A picker that chooses a zone by ``zone_shares``, then an instance within it.

    Same interface as the family's pickers (``pick(exclude, hash_key=None)``,
    ``endpoints``, ``expires_at``); immutable once built, never blocks. ``callers`` as
    for ``zone_shares``. Instances without a zone form the zone "".
    """

    __slots__ = (
        "_all",
        "_cumulative",
        "_random",
        "_zone_pickers",
        "endpoints",
        "expires_at",
        "local_zone",
        "service",
        "shares",
    )

    def __init__(
        self,
        policy: str,
        service: str,
        endpoints: Sequence[Endpoint],
        local_zone: str,
        *,
        rng: random.Random,
        clock: Callable[[], float],
        expires_at: float = math.inf,
        callers: Mapping[str, float] | None = None,
    ) -> None:
        if policy in HASH_POLICIES:
            raise ValueError(f"zone-aware routing does not combine with {policy!r}")
        self.service = service
        self.endpoints = tuple(endpoints)
        self.expires_at = expires_at
        self.local_zone = local_zone
        by_zone: dict[str, list[Endpoint]] = {}
        for endpoint in self.endpoints:
            by_zone.setdefault(endpoint.instance.zone, []).append(endpoint)
        capacity = {z: float(sum(hash_weights(eps))) for z, eps in by_zone.items()}
        if local_zone and local_zone not in capacity:
            capacity[local_zone] = 0.0  # our zone has no healthy instance right now
        # The chosen zone's share of calls, in a fixed order (for the draw).
        self.shares: dict[str, float] = zone_shares(local_zone, capacity, callers)
        zones = [z for z, share in self.shares.items() if share > 0 and z in by_zone]
        self._zone_pickers: tuple[Picker, ...] = tuple(
            build_picker(policy, service, by_zone[z], rng=rng, clock=clock, expires_at=expires_at)
            for z in zones
        )
        self._cumulative = list(accumulate(self.shares[z] for z in zones))
        self._all = build_picker(
            policy, service, self.endpoints, rng=rng, clock=clock, expires_at=expires_at
        )
        self._random = rng.random

    def choose(self, hash_key: int | None) -> Endpoint:
        """A call's first pick: ``pick`` with nothing excluded."""
        return self.pick((), hash_key)

    def pick(self, exclude: Collection[str] = (), hash_key: int | None = None) -> Endpoint:
        """An endpoint of the zone drawn by the shares; among all if that zone is spent."""
        del hash_key  # zones and consistent hashing are not combined
        pickers = self._zone_pickers
        if not pickers:
            return self._all.pick(exclude)
        if len(pickers) == 1:
            chosen = pickers[0]
        else:
            cumulative = self._cumulative
            at = bisect_right(cumulative, self._random() * cumulative[-1])
            chosen = pickers[min(at, len(pickers) - 1)]
        if exclude and all(e.instance.id in exclude for e in chosen.endpoints):
            return self._all.pick(exclude)  # never fail a call another zone could serve
        return chosen.pick(exclude)
