"""What an install of consul-discovery with some extras holds, read from installed metadata.

The project's venv has every extra installed, so the distributions (and their top-level
import names) that ``pip install 'consul-discovery[x,y]'`` would bring can be worked out
from the metadata there, without installing anything.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DISTRIBUTION = "consul-discovery"


def requirements(dist: str, extras: Iterable[str] = ()) -> list[Requirement]:
    """``dist``'s requirements that apply with ``extras`` (and without any extra)."""
    wanted = {"", *extras}
    chosen = []
    for raw in metadata.requires(dist) or []:
        req = Requirement(raw)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
            chosen.append(req)
    return chosen


def closure(extras: Iterable[str] = (), dist: str = DISTRIBUTION) -> frozenset[str]:
    """Canonical names of every distribution ``dist[extras]`` brings (``dist`` excluded)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    found: set[str] = set()
    todo = [(canonicalize_name(dist), frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        for req in requirements(name, wanted):
            child = canonicalize_name(req.name)
            if child != canonicalize_name(DISTRIBUTION):
                found.add(child)
            todo.append((child, frozenset(req.extras)))
    return frozenset(found)


@functools.cache
def _top_level_by_dist() -> dict[str, frozenset[str]]:
    by_dist: dict[str, set[str]] = {}
    for top, dists in metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(canonicalize_name(dist), set()).add(top)
    return {dist: frozenset(tops) for dist, tops in by_dist.items()}


def import_names(dists: Iterable[str]) -> frozenset[str]:
    """The top-level import names that ``dists`` install."""
    table = _top_level_by_dist()
    return frozenset(top for dist in dists for top in table.get(canonicalize_name(dist), ()))


def extras_declared() -> frozenset[str]:
    """The extras consul-discovery's metadata declares."""
    return frozenset(metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or [])
