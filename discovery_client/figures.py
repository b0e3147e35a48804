"""Checks of a number argument: seconds, a whole number, an amount (no imports of the
package: the policies' value types use them, and ``arguments`` re-exports them).

Each raises TypeError (not a finite number of that kind) or ValueError (out of range)
naming the parameter, and returns the value as given.
"""

from __future__ import annotations

import math
from typing import Any


def _shown(value: Any) -> str:
    """``value`` as an error message shows it: its type and its repr."""
    return f"{type(value).__name__} {value!r}"


def is_seconds(value: Any) -> bool:
    """True for a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def seconds(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` if it is a number of seconds, >= 0 (> 0 when ``positive``); else a
    TypeError or ValueError naming ``name``."""
    if not is_seconds(value):
        raise TypeError(f"{name} must be a number of seconds; got {_shown(value)}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound} seconds; got {value!r}")
    return value  # type: ignore[no-any-return]


def whole(name: str, value: Any, *, low: int) -> int:
    """``value`` if it is an int (not a bool) >= ``low``; else a TypeError or ValueError
    naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be a whole number; got {_shown(value)}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    return value


def amount(name: str, value: Any, *, high: float | None = None) -> float:
    """``value`` if it is a finite number >= 0 (and <= ``high``); else a TypeError or
    ValueError naming ``name``."""
    if not is_seconds(value):
        raise TypeError(f"{name} must be a finite number; got {_shown(value)}")
    if value < 0 or (high is not None and value > high):
        bound = ">= 0" if high is None else f"within [0, {high:g}]"
        raise ValueError(f"{name} must be {bound}; got {value!r}")
    return value  # type: ignore[no-any-return]
