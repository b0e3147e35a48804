"""The registry's durations ("10s", "1m30s", "500ms"): read, bounded, and spelt as Consul does."""

from __future__ import annotations

import math

from consul_discovery.connection.durations import duration_seconds
from consul_discovery.registry.errors import RegistryConfigError


def parse_duration(setting: str, text: str | float | int) -> float:
    """Seconds in ``text`` ("10s", "1m30s", "500ms", or a bare number of seconds).

    Raises ``RegistryConfigError`` naming ``setting`` when ``text`` is not a duration
    (the rule is ``consul_discovery.connection.durations``, shared by every setting).
    """
    try:
        return duration_seconds(text)
    except ValueError as exc:
        raise RegistryConfigError(setting, str(exc)) from None


def check_at_most(setting: str, seconds: float, most: float) -> None:
    """Raise ``RegistryConfigError`` naming ``setting`` unless ``seconds`` is finite and
    at most ``most`` (a duration given as a number, not parsed, is checked here too)."""
    if not math.isfinite(seconds):
        raise RegistryConfigError(setting, f"{seconds!r} is not a finite duration")
    if seconds > most:
        raise RegistryConfigError(
            setting, f"{format_duration(seconds)} is longer than {_spoken(most)}, the most it takes"
        )


def _spoken(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return format_duration(seconds)


def format_duration(seconds: float) -> str:
    """Consul's spelling of ``seconds``: whole seconds as "10s", otherwise milliseconds."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"
