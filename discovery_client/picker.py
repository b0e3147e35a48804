"""Pickers: immutable selection rules over one snapshot of endpoints.

After grpc-go's ``balancer/base`` picker: a picker is built from a complete snapshot,
never blocks and is replaced whole by the Balancer. Everything a pick needs is
precomputed at build time; the only shared state a pick touches is the round-robin
counter (an ``itertools.count``, atomic under the GIL) and the injected random source.

``pick(exclude=...)`` skips instances already tried by this call when any other
instance is left; when every instance has been tried it picks among all of them.

Every policy honours Consul's weights for each instance's current health
(``Weights.Passing`` / ``Weights.Warning``, so a warning instance is derated); a weight
of 0 takes an instance out of rotation unless every weight is 0. With equal weights each
policy is the classic one (and as cheap); with unequal weights:

- ``round_robin``: earliest-deadline-first weighted round robin (Envoy's EDF), as a
  schedule precomputed at build time, walked by the lock-free counter;
- ``random`` and ``weighted``: random in proportion to weight;
- ``least_request``: P2C over two candidates drawn in proportion to weight, keeping
  the lower ``in_flight / weight`` (Envoy's weighted least request); on a tie (an idle
  service) the first draw wins, so idle traffic splits exactly by weight;
- ``peak_ewma``: P2C over two candidates drawn in proportion to weight (Finagle's
  weighted P2C), keeping the lower peak-EWMA cost per unit of weight (as Envoy's
  weighted least request divides active requests): a warning instance takes a call
  only when it is that much cheaper, so at equal latency its share is at most its
  weight's. An estimate with no news for a decay time is forgotten, so an instance
  kept out since a stall is tried again (consul_discovery.client.load).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence

from consul_discovery.client.config import POLICIES
from consul_discovery.client.errors import NoHealthyInstanceError
from consul_discovery.client.hashing import MaglevPicker, RingHashPicker
from consul_discovery.client.load import Endpoint

Clock = Callable[[], float]


class Picker:
    """Chooses one endpoint per call from a fixed snapshot; subclasses set the rule."""

    __slots__ = (
        "_clock",
        "_cumulative",
        "_equal",
        "_n",
        "_random",
        "_rng",
        "_total",
        "_weights",
        "endpoints",
        "expires_at",
        "service",
    )

    def __init__(
        self,
        service: str,
        endpoints: Sequence[Endpoint],
        rng: random.Random,
        clock: Clock,
        expires_at: float = math.inf,
    ) -> None:
        self.service = service
        self.endpoints = tuple(endpoints)
        # The Balancer rebuilds the picker once the clock passes this (an ejection ends).
        self.expires_at = expires_at
        self._n = len(self.endpoints)
        self._rng = rng
        self._random = rng.random
        self._clock = clock
        self._weights = effective_weights(self.endpoints)
        self._equal = len(set(self._weights)) <= 1
        self._cumulative = list(itertools.accumulate(self._weights))
        self._total = float(self._cumulative[-1]) if self._cumulative else 0.0

    def _draw(self) -> Endpoint:
        """One endpoint at random, in proportion to its weight."""
        return self.endpoints[bisect_right(self._cumulative, self._random() * self._total)]

    def pick(self, exclude: Collection[str] = (), hash_key: int | None = None) -> Endpoint:
        """Choose an endpoint, avoiding ids in ``exclude`` when another one is left.

        ``hash_key`` is the call's request hash (consistent-hashing policies pick by it;
        the others ignore it), computed once per call by the core.
        """
        if exclude:
            rest = [e for e in self.endpoints if e.instance.id not in exclude]
            if rest and len(rest) < self._n:
                return type(self)(self.service, rest, self._rng, self._clock).choose(hash_key)
        return self.choose(hash_key)

    def choose(self, hash_key: int | None) -> Endpoint:
        """An endpoint by the picker's rule, nothing excluded (a call's first pick)."""
        raise NotImplementedError


class EmptyPicker(Picker):
    """The picker of a service with no instance to call: every pick raises."""

    __slots__ = ("detail",)

    def __init__(self, service: str, detail: str, expires_at: float = math.inf) -> None:
        super().__init__(service, (), random.Random(0), lambda: 0.0, expires_at)
        self.detail = detail

    def pick(self, exclude: Collection[str] = (), hash_key: int | None = None) -> Endpoint:
        """Always raise NoHealthyInstanceError."""
        raise NoHealthyInstanceError(self.service, self.detail)

    def choose(self, hash_key: int | None) -> Endpoint:
        raise NoHealthyInstanceError(self.service, self.detail)


class RoundRobinPicker(Picker):
    """Each endpoint in turn from a random offset (grpc-go's round_robin); EDF by weight."""

    __slots__ = ("_next", "_schedule")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self._equal:
            self._schedule: tuple[int, ...] = tuple(range(self._n))
        else:
            self._schedule = edf_schedule(self._weights)
        self._next = itertools.count(self._rng.randrange(len(self._schedule))).__next__

    def choose(self, hash_key: int | None) -> Endpoint:
        schedule = self._schedule
        return self.endpoints[schedule[self._next() % len(schedule)]]


class RandomPicker(Picker):
    """A random endpoint, in proportion to its weight (uniform when weights are equal)."""

    __slots__ = ()

    def choose(self, hash_key: int | None) -> Endpoint:
        if self._equal:
            return self.endpoints[int(self._random() * self._n)]
        return self._draw()


class WeightedPicker(RandomPicker):
    """Random in proportion to the Consul weight for each instance's current health.

    Instances in ``warning`` count with ``Weights.Warning``. A weight of 0 takes the
    instance out of rotation unless every weight is 0 (then all count equally).
    """

    __slots__ = ()


class _PowerOfTwoChoicesPicker(Picker):
    """Finagle's P2C selection rule: sample two endpoints, keep the lighter one.

    With equal weights the two are distinct and uniform; otherwise each is drawn in
    proportion to its weight (the same one twice is simply picked). The load metric is
    the subclass's ``_lighter``, which keeps ``a`` on a tie; the selection rule is shared.
    """

    __slots__ = ("_pairs",)

    MAX_PAIR_TABLE = 64  # endpoints up to which every ordered pair is listed up front

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # With equal weights, every ordered pair of distinct endpoints, so a pick is one
        # draw (the same distribution as drawing one, then another among the rest).
        ends, n = self.endpoints, self._n
        self._pairs: tuple[tuple[Endpoint, Endpoint], ...] = (
            tuple((ends[i], ends[j]) for i in range(n) for j in range(n) if i != j)
            if self._equal and 1 < n <= self.MAX_PAIR_TABLE
            else ()
        )

    def choose(self, hash_key: int | None) -> Endpoint:
        pairs = self._pairs
        if pairs:
            a, b = pairs[int(self._random() * len(pairs))]
            return self._lighter(a, b)
        n = self._n
        if n == 1:
            return self.endpoints[0]
        if not self._equal:
            a, b = self._draw(), self._draw()
            return a if a is b else self._lighter(a, b)
        i = int(self._random() * n)
        j = int(self._random() * (n - 1))
        if j >= i:
            j += 1
        return self._lighter(self.endpoints[i], self.endpoints[j])

    def _lighter(self, a: Endpoint, b: Endpoint) -> Endpoint:
        raise NotImplementedError


class LeastRequestPicker(_PowerOfTwoChoicesPicker):
    """Power of two choices on in-flight requests per unit of weight (P2C + LeastLoaded)."""

    __slots__ = ()

    def _lighter(self, a: Endpoint, b: Endpoint) -> Endpoint:
        if self._equal:
            return a if len(a.load.flight) <= len(b.load.flight) else b
        # in_flight / weight, cross-multiplied (weights are ints >= 1 here).
        wa, wb = max(1, a.instance.weight), max(1, b.instance.weight)
        return a if len(a.load.flight) * wb <= len(b.load.flight) * wa else b


class PeakEwmaPicker(_PowerOfTwoChoicesPicker):
    """Power of two choices on peak-EWMA latency × (in-flight + 1) per unit of weight.

    Finagle's PeakEwma cost, divided by the instance's Consul weight for its health
    (Envoy's weighted least request does the same with active requests): an instance of
    weight w takes a call only when its cost is below 1/w of the other's, so at equal
    latency a warning instance (Weights.Warning 1 against Passing 10) is derated by at
    least its weight ratio, and a slow one of any weight is still avoided.
    """

    __slots__ = ()

    def _lighter(self, a: Endpoint, b: Endpoint) -> Endpoint:
        now = self._clock()
        if self._equal:
            return a if a.load.peak_ewma_load(now) <= b.load.peak_ewma_load(now) else b
        wa, wb = max(1, a.instance.weight), max(1, b.instance.weight)
        # cost / weight, cross-multiplied (weights are ints >= 1 here).
        return a if a.load.peak_ewma_load(now) * wb <= b.load.peak_ewma_load(now) * wa else b


def effective_weights(endpoints: Sequence[Endpoint]) -> list[int]:
    """Each endpoint's Consul weight for its health; 0 stays 0 unless every one is 0."""
    weights = [max(0, e.instance.weight) for e in endpoints]
    return weights if any(weights) else [1] * len(weights)


EDF_MAX_SCHEDULE = 4096


def edf_schedule(weights: Sequence[int]) -> tuple[int, ...]:
    """Indexes in earliest-deadline-first order over one period of the weights.

    Each entry ``i`` with weight ``w`` is due every ``1/w``; the one due soonest goes
    next (ties: lower index). Weights summing past ``EDF_MAX_SCHEDULE`` are scaled down
    (a nonzero weight stays at least 1) so the schedule stays small.
    """
    total = sum(weights)
    if total > EDF_MAX_SCHEDULE:
        weights = [max(1, round(w * EDF_MAX_SCHEDULE / total)) if w else 0 for w in weights]
    heap = [(1.0 / w, i) for i, w in enumerate(weights) if w > 0]
    heapq.heapify(heap)
    schedule = []
    for _ in range(sum(weights)):
        due, i = heapq.heappop(heap)
        schedule.append(i)
        heapq.heappush(heap, (due + 1.0 / weights[i], i))
    return tuple(schedule)


PICKERS: dict[str, type[Picker]] = {
    "round_robin": RoundRobinPicker,
    "random": RandomPicker,
    "weighted": WeightedPicker,
    "least_request": LeastRequestPicker,
    "peak_ewma": PeakEwmaPicker,
    # Consistent hashing (a service-resolver's policy): same interface, pick(..., hash_key).
    "ring_hash": RingHashPicker,  # type: ignore[dict-item]
    "maglev": MaglevPicker,  # type: ignore[dict-item]
}
assert set(PICKERS) == set(POLICIES), "every configured policy needs a picker"


def build_picker(
    policy: str,
    service: str,
    endpoints: Sequence[Endpoint],
    *,
    rng: random.Random,
    clock: Clock,
    expires_at: float = math.inf,
    empty_detail: str = "no instances",
) -> Picker:
    """Build the picker for ``policy`` over ``endpoints`` (an EmptyPicker if there are none)."""
    if not endpoints:
        return EmptyPicker(service, empty_detail, expires_at)
    try:
        cls = PICKERS[policy]
    except KeyError:
        raise ValueError(
            f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}"
        ) from None
    return cls(service, endpoints, rng, clock, expires_at)
