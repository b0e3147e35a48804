"""Checks of public constructors' arguments, made once where each argument is taken.

A wrong type would otherwise surface at the first call, far from its cause, with a
message that does not name the argument (``'str' object has no attribute
'datacenter'``). Each check raises TypeError (wrong type) or ValueError (a value out of
range) naming the parameter and what it must be, and returns the value as it is used.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from consul_discovery.client.figures import is_seconds, seconds

if TYPE_CHECKING:  # the core imports this module: no requests here
    from consul_discovery.client.call import Timeout

T = TypeVar("T")


def _shown(value: Any) -> str:
    """``value`` as an error message shows it: its type and its repr."""
    return f"{type(value).__name__} {value!r}"


def _a(kind: type) -> str:
    """``kind``'s name with its article: "a RetryPolicy", "an EjectionPolicy"."""
    name = kind.__name__
    return f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"


def instance_of(name: str, value: Any, kind: type[T]) -> T:
    """``value`` if it is a ``kind``, else a TypeError naming ``name``."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {_a(kind)}; got {_shown(value)}")
    return value


def per_name(name: str, value: Any, kind: type[T]) -> dict[str, T]:
    """``value`` (a mapping of names to ``kind``s, or None) as a dict; else a TypeError
    naming ``name`` and, for a bad entry, its key."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a mapping of service names to {kind.__name__}; got {_shown(value)}"
        )
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{name}: keys must be service names (str); got {_shown(key)}")
        instance_of(f"{name}[{key!r}]", item, kind)
    return dict(value)


def request_timeout(name: str, value: Any) -> Timeout:
    """``value`` if requests takes it as a timeout (positive seconds, a (connect, read)
    pair of positive seconds or None each, or None); else a TypeError or ValueError
    naming ``name``."""
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError(
                f"{name} must be seconds, a (connect, read) pair or None; "
                f"got a tuple of {len(value)}"
            )
        connect, read = value
        parts = [(f"{name}'s connect", connect), (f"{name}'s read", read)]
        for part, item in parts:
            if item is not None:
                seconds(part, item, positive=True)
        return value
    if not is_seconds(value):
        raise TypeError(
            f"{name} must be seconds, a (connect, read) pair or None; got {_shown(value)}"
        )
    return seconds(name, value, positive=True)


def one_of(name: str, value: Any, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices``; else a ValueError naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        shown = " or ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be {shown}; got {value!r}")
    return value


def is_path(value: Any) -> bool:
    """True for a directory name: a str or an os.PathLike."""
    return isinstance(value, str | os.PathLike)
