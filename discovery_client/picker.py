"""Pickers: immutable selection rules over one snapshot of endpoints.

After grpc-go's ``balancer/base`` picker: a picker is built from a complete snapshot,
never blocks and is replaced whole by the Balancer. Everything a pick needs is
precomputed at build time; the only shared state a pick touches is the round-robin
counter (an ``itertools.count``, atomic under the GIL) and the injected random source.

``pick(exclude=...)`` skips instances already tried by this call when any other
instance is left; when every instance has been tried it picks among all of them.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence

from discovery_client.config import POLICIES
from discovery_client.errors import NoHealthyInstanceError
from discovery_client.load import Endpoint

Clock = Callable[[], float]


class Picker:
    """Chooses one endpoint per call from a fixed snapshot; subclasses set the rule."""

    __slots__ = ("_clock", "_n", "_random", "_rng", "endpoints", "expires_at", "service")

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

    def pick(self, exclude: Collection[str] = ()) -> Endpoint:
        """Choose an endpoint, avoiding ids in ``exclude`` when another one is left."""
        if exclude:
            rest = [e for e in self.endpoints if e.instance.id not in exclude]
            if rest and len(rest) < self._n:
                return type(self)(self.service, rest, self._rng, self._clock)._choose()
        return self._choose()

    def _choose(self) -> Endpoint:
        raise NotImplementedError


class EmptyPicker(Picker):
    """The picker of a service with no instance to call: every pick raises."""

    __slots__ = ("detail",)

    def __init__(self, service: str, detail: str, expires_at: float = math.inf) -> None:
        super().__init__(service, (), random.Random(0), lambda: 0.0, expires_at)
        self.detail = detail

    def pick(self, exclude: Collection[str] = ()) -> Endpoint:
        """Always raise NoHealthyInstanceError."""
        raise NoHealthyInstanceError(self.service, self.detail)

    def _choose(self) -> Endpoint:
        raise NoHealthyInstanceError(self.service, self.detail)


class RoundRobinPicker(Picker):
    """Each endpoint in turn, starting at a random offset (as grpc-go's round_robin)."""

    __slots__ = ("_next",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next = itertools.count(self._rng.randrange(self._n)).__next__

    def _choose(self) -> Endpoint:
        return self.endpoints[self._next() % self._n]


class RandomPicker(Picker):
    """A uniformly random endpoint."""

    __slots__ = ()

    def _choose(self) -> Endpoint:
        return self.endpoints[int(self._random() * self._n)]


class WeightedPicker(Picker):
    """A random endpoint, in proportion to its Consul weight for its current health.

    Instances in ``warning`` count with ``Weights.Warning``. A weight of 0 takes the
    instance out of rotation unless every weight is 0 (then all count equally).
    """

    __slots__ = ("_cumulative", "_total")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        weights = [max(0, e.instance.weight) for e in self.endpoints]
        if not any(weights):
            weights = [1] * self._n
        self._cumulative = list(itertools.accumulate(weights))
        self._total = float(self._cumulative[-1])

    def _choose(self) -> Endpoint:
        return self.endpoints[bisect_right(self._cumulative, self._random() * self._total)]


class _PowerOfTwoChoicesPicker(Picker):
    """Finagle's P2C selection rule: sample two distinct endpoints, keep the lighter one.

    The load metric is the subclass's ``_lighter``; the selection rule is shared.
    """

    __slots__ = ()

    def _choose(self) -> Endpoint:
        n = self._n
        if n == 1:
            return self.endpoints[0]
        i = int(self._random() * n)
        j = int(self._random() * (n - 1))
        if j >= i:
            j += 1
        return self._lighter(self.endpoints[i], self.endpoints[j])

    def _lighter(self, a: Endpoint, b: Endpoint) -> Endpoint:
        raise NotImplementedError


class LeastRequestPicker(_PowerOfTwoChoicesPicker):
    """Power of two choices on in-flight counts (Finagle's P2C + LeastLoaded)."""

    __slots__ = ()

    def _lighter(self, a: Endpoint, b: Endpoint) -> Endpoint:
        return a if a.load.in_flight <= b.load.in_flight else b


class PeakEwmaPicker(_PowerOfTwoChoicesPicker):
    """Power of two choices on peak-EWMA latency × (in-flight + 1) (Finagle's PeakEwma)."""

    __slots__ = ()

    def _lighter(self, a: Endpoint, b: Endpoint) -> Endpoint:
        now = self._clock()
        return a if a.load.peak_ewma_load(now) <= b.load.peak_ewma_load(now) else b


PICKERS: dict[str, type[Picker]] = {
    "round_robin": RoundRobinPicker,
    "random": RandomPicker,
    "weighted": WeightedPicker,
    "least_request": LeastRequestPicker,
    "peak_ewma": PeakEwmaPicker,
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
