"""Consistent hashing: the ``ring_hash`` and ``maglev`` pickers (a service-resolver's policy).

A call that carries a hash key (computed once per call from the request by the resolver's
``HashPolicies``: a header, a cookie, a query parameter or the source IP) goes to the
instance that owns that key, so the same key keeps reaching the same instance, and a
change of membership moves only the keys of the instance that came or went: about 1/N of
them when one of N leaves (Envoy's ``ring_hash_lb.cc`` and ``maglev_lb.cc``).

- ``ring_hash``: each instance owns ``weight``-proportional points on a 64-bit ring
  (``RingHashConfig``: at least ``minimum_ring_size`` points in all, at most
  ``maximum_ring_size``; points per unit of weight in powers of two, see ``build_ring``);
  a key belongs to the first point at or after its hash.
- ``maglev``: a lookup table of a prime size (65,537, Envoy's default) filled from each
  instance's own permutation of the slots, in turns proportional to its weight; a key
  belongs to ``table[hash % size]``. Smaller disruption bound and an O(1) lookup, at the
  cost of a longer build.

Both are built once per membership (at the Balancer's rebuild, never on the hot path), are
immutable, and answer a pick without blocking. The last few rings and tables are kept
(``functools.lru_cache``), so an instance that is ejected and comes back, or a set that
flaps, costs no rebuild: a Maglev table of 65,537 slots takes ~25-70 ms of CPU in
CPython, a ring of 1,024 points ~4 ms. A pick without a hash key (no policy
matched the request) chooses at random in proportion to weight, as Envoy does. A retry
that excludes the instances already tried walks on from the key's position to the next
instance not tried (ring: the next point; maglev: the next slot).

Points and slots are hashed from the instance id (not its address: an instance that
moves keeps its keys) with BLAKE2b-64, the same in every process, so several clients
(e.g. every gateway instance) send a key to the same instance.
"""

from __future__ import annotations

import functools
import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Sequence
from hashlib import blake2b
from itertools import accumulate

from consul_discovery.client.load import Endpoint

MASK64 = (1 << 64) - 1
MAGLEV_TABLE_SIZE = 65537  # prime, Envoy's default
DEFAULT_MIN_RING_SIZE = 1024  # Consul's defaults for RingHashConfig
DEFAULT_MAX_RING_SIZE = 8192


def hash64(text: str, seed: int = 0) -> int:
    """A stable 64-bit hash of ``text`` (the same in every process, unlike ``hash()``)."""
    digest = blake2b(
        text.encode(), digest_size=8, salt=seed.to_bytes(16, "little") if seed else b""
    )
    return int.from_bytes(digest.digest(), "little")


def combine(previous: int | None, new: int) -> int:
    """Fold one more hash policy's value into a call's hash (Envoy: rotate left 1, xor)."""
    if previous is None:
        return new
    return (((previous << 1) | (previous >> 63)) & MASK64) ^ new


def hash_weights(endpoints: Sequence[Endpoint]) -> list[int]:
    """Each endpoint's Consul weight for its health; 0 stays 0 unless every one is 0.

    The rule of the whole picker family (``picker.effective_weights``), restated here
    because the family's registry imports this module.
    """
    weights = [max(0, e.instance.weight) for e in endpoints]
    return weights if any(weights) else [1] * len(weights)


class _HashPicker:
    """What both consistent-hash pickers share: the Picker interface and keyless picks.

    Same constructor and ``pick`` as ``consul_discovery.client.picker.Picker`` (built by
    ``build_picker`` from one snapshot, immutable, never blocking), plus a per-call
    ``hash_key``.
    """

    __slots__ = ("_cumulative", "_ids", "_random", "_total", "endpoints", "expires_at", "service")

    def __init__(
        self,
        service: str,
        endpoints: Sequence[Endpoint],
        rng: random.Random,
        clock: Callable[[], float],
        expires_at: float = math.inf,
    ) -> None:
        if not endpoints:
            raise ValueError(f"a hash picker for {service!r} needs at least one endpoint")
        self.service = service
        self.endpoints = tuple(endpoints)
        # The Balancer rebuilds the picker once the clock passes this (an ejection ends).
        self.expires_at = expires_at
        self._ids = [e.instance.id for e in self.endpoints]
        weights = hash_weights(self.endpoints)
        self._cumulative = list(accumulate(weights))
        self._total = float(self._cumulative[-1])
        self._random = rng.random
        del clock  # hashing reads no load

    def pick(self, exclude: Collection[str] = (), hash_key: int | None = None) -> Endpoint:
        """The endpoint that owns ``hash_key`` (else one at random by weight), skipping
        ids in ``exclude`` while another one is left."""
        if hash_key is None:
            return self._draw(exclude)
        index = self._owner(hash_key & MASK64, exclude if exclude else None)
        return self.endpoints[index]

    def choose(self, hash_key: int | None) -> Endpoint:
        """A call's first pick: ``pick`` with nothing excluded."""
        return self.pick((), hash_key)

    def _draw(self, exclude: Collection[str]) -> Endpoint:
        endpoint = self.endpoints[bisect_right(self._cumulative, self._random() * self._total)]
        if not exclude or endpoint.instance.id not in exclude:
            return endpoint
        rest = [i for i, ident in enumerate(self._ids) if ident not in exclude]
        if not rest:
            return endpoint
        weights = [self._cumulative[i] - (self._cumulative[i - 1] if i else 0) for i in rest]
        if not any(weights):
            weights = [1] * len(rest)
        cumulative = list(accumulate(weights))
        return self.endpoints[rest[bisect_right(cumulative, self._random() * cumulative[-1])]]

    def _owner(self, key: int, exclude: Collection[str] | None) -> int:
        raise NotImplementedError


class RingHashPicker(_HashPicker):
    """Envoy's ring hash: weight-proportional points on a ring of 64-bit hashes."""

    __slots__ = ("_owners", "_points")

    def __init__(
        self,
        *args,
        minimum_ring_size: int = DEFAULT_MIN_RING_SIZE,
        maximum_ring_size: int = DEFAULT_MAX_RING_SIZE,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not 1 <= minimum_ring_size <= maximum_ring_size:
            raise ValueError(
                f"ring sizes need 1 <= minimum <= maximum; got {minimum_ring_size}, "
                f"{maximum_ring_size}"
            )
        self._points, self._owners = build_ring(
            tuple(self._ids),
            tuple(hash_weights(self.endpoints)),
            minimum_ring_size,
            maximum_ring_size,
        )

    @property
    def ring_size(self) -> int:
        """How many points the ring holds."""
        return len(self._points)

    def _owner(self, key: int, exclude: Collection[str] | None) -> int:
        points, owners = self._points, self._owners
        at = bisect_left(points, key)
        if at == len(points):
            at = 0
        owner = owners[at]
        if exclude is None or self._ids[owner] not in exclude:
            return owner
        for step in range(1, len(points)):
            candidate = owners[(at + step) % len(points)]
            if self._ids[candidate] not in exclude:
                return candidate
        return owner  # every instance tried: the key's own


@functools.lru_cache(maxsize=8)
def build_ring(
    ids: tuple[str, ...], weights: tuple[int, ...], minimum: int, maximum: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ring's points in order and the owner index of each.

    Instance ``i`` gets ``weights[i] × per_weight`` points, hashed from ``"<id>_<n>"``;
    ``per_weight`` is the smallest power of two that gives the ring at least ``minimum``
    points, or the largest that keeps it within ``maximum``. Envoy instead scales the ring
    exactly to the set, so removing one of ten instances gives each of the nine more
    points, which take keys from one another (17% of keys moved, measured, instead of
    10%); with a power-of-two step an instance's points stay the same unless the set's
    total weight halves or doubles, so only the keys of the instance that left move.
    If even one point per unit of weight exceeds ``maximum``, weights are scaled down.
    """
    total = sum(weights)
    per_weight = 1
    while total * per_weight < minimum:
        per_weight *= 2
    while per_weight > 1 and total * per_weight > maximum:
        per_weight //= 2
    if total * per_weight > maximum:  # more weight than points allowed: scale weights down
        counts = [max(1, w * maximum // total) if w else 0 for w in weights]
    else:
        counts = [w * per_weight for w in weights]
    ring = sorted(
        (hash64(f"{ident}_{n}"), owner)
        for owner, (ident, count) in enumerate(zip(ids, counts, strict=True))
        for n in range(count)
    )
    return tuple(p for p, _ in ring), tuple(o for _, o in ring)


class MaglevPicker(_HashPicker):
    """Google's Maglev (Envoy's maglev): a prime-sized table filled by weighted turns."""

    __slots__ = ("_size", "_table")

    def __init__(self, *args, table_size: int = MAGLEV_TABLE_SIZE, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._size = table_size
        # Built over the ids in sorted order, so every client (whatever order its set comes
        # in) fills the same table; mapped back to this picker's endpoint indexes.
        weights = hash_weights(self.endpoints)
        order = sorted(range(len(self._ids)), key=self._ids.__getitem__)
        table = build_maglev_table(
            tuple(self._ids[i] for i in order), tuple(weights[i] for i in order), table_size
        )
        self._table = tuple(order[slot] for slot in table)

    def _owner(self, key: int, exclude: Collection[str] | None) -> int:
        table, size = self._table, self._size
        slot = key % size
        owner = table[slot]
        if exclude is None or self._ids[owner] not in exclude:
            return owner
        for step in range(1, size):
            candidate = table[(slot + step) % size]
            if self._ids[candidate] not in exclude:
                return candidate
        return owner


@functools.lru_cache(maxsize=8)
def build_maglev_table(
    ids: tuple[str, ...], weights: tuple[int, ...], size: int
) -> tuple[int, ...]:
    """The Maglev lookup table: ``size`` slots, each the index of its owner.

    Each instance walks its own permutation of the slots (``offset + j × skip`` mod a
    prime ``size``) and takes the next free slot on its turn; an instance of weight w
    takes a turn in w/max(w) of the rounds (Envoy's weighted Maglev). Weight-0 instances
    take none.
    """
    if size < 2 or any(size % d == 0 for d in range(2, math.isqrt(size) + 1)):
        raise ValueError(f"the Maglev table size must be a prime; got {size}")
    live = [i for i, w in enumerate(weights) if w > 0]
    heaviest = max(weights[i] for i in live)
    # Per instance: [next slot of its permutation, skip, turn credit, weight, index].
    walkers = [
        [hash64(ids[i]) % size, hash64(ids[i], seed=1) % (size - 1) + 1, 0, weights[i], i]
        for i in live
    ]
    table = [-1] * size
    filled = 0
    iteration = 0
    while True:
        iteration += 1
        for walker in walkers:
            slot, skip, credit, weight, owner = walker
            if iteration * weight < credit:
                continue  # a lighter instance sits this round out
            while table[slot] >= 0:
                slot += skip
                if slot >= size:
                    slot -= size
            table[slot] = owner
            slot += skip
            walker[0] = slot - size if slot >= size else slot
            walker[2] = credit + heaviest
            filled += 1
            if filled == size:
                return tuple(table)
