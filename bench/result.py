"""What a benchmark hands back: table rows, checks against targets, charts, parameters."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Check:
    """One target: the figure measured, the rule it must meet, and whether it did."""

    name: str
    value: float
    target: str
    met: bool
    note: str = ""


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart spec that report.py renders: grouped bars, or one CDF line per series."""

    title: str
    ylabel: str
    labels: tuple[str, ...]  # bar groups (kind="bar"); ignored for kind="cdf"
    series: dict[str, list[float]]  # bar heights per label, or raw samples (kind="cdf")
    kind: str = "bar"
    log: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """One benchmark run: rows for the table, checks, charts and the parameters used."""

    name: str
    title: str
    rows: list[dict[str, Any]]
    checks: list[Check] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` in [0, 100] (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """n, p50, p99 and p99.9 of ``values`` multiplied by ``scale`` (e.g. 1e3 for ms)."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50) * scale,
        "p99": percentile(ordered, 99) * scale,
        "p999": percentile(ordered, 99.9) * scale,
    }


def median_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap interval for the median of ``values`` (percentile method, seeded)."""
    if not values:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    medians = sorted(
        statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples)
    )
    tail = (1.0 - confidence) / 2
    return (
        medians[int(tail * (resamples - 1))],
        medians[int((1.0 - tail) * (resamples - 1))],
    )


def at_most(name: str, value: float, limit: float, unit: str = "", note: str = "") -> Check:
    """A check that ``value`` <= ``limit``."""
    return Check(name, value, f"<= {limit:g}{unit}", bool(value <= limit), note)


def at_least(name: str, value: float, limit: float, unit: str = "", note: str = "") -> Check:
    """A check that ``value`` >= ``limit``."""
    return Check(name, value, f">= {limit:g}{unit}", bool(value >= limit), note)
