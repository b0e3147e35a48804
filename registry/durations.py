"""Go-style durations ("10s", "1m30s", "500ms") to seconds and back; every one finite."""

from __future__ import annotations

import math
import re

from consul_discovery.registry.errors import RegistryConfigError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(setting: str, text: str | float | int) -> float:
    """Seconds in ``text`` ("10s", "1m30s", "500ms", or a bare number of seconds).

    Raises ``RegistryConfigError`` naming ``setting`` when ``text`` is not a duration.
    """
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = text.strip()
        try:
            seconds = float(raw)
        except ValueError:
            parts = _PART.findall(raw)
            if not parts or "".join(n + u for n, u in parts) != raw:
                raise RegistryConfigError(
                    setting, f"{text!r} is not a duration (use e.g. '10s', '1m30s', '500ms')"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise RegistryConfigError(setting, f"{text!r} is not a finite duration")
    if seconds < 0:
        raise RegistryConfigError(setting, f"{text!r} is negative")
    return seconds


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
