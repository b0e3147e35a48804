"""Durations written as text, to seconds: the one rule every setting and option shares.

A duration is Consul's (Go's) spelling, ``"10s"``, ``"1m30s"``, ``"500ms"``, or a bare
number of seconds (``"2.5"``). The registry's ``SERVICE_*`` durations, the mesh's
``MESH_*_TIMEOUT`` settings, ``DISCOVERY_SNAPSHOT_MAX_AGE`` and the command lines'
``--timeout`` options all read theirs with ``duration_seconds``, and each turns its
``ValueError`` into its own error type naming the setting or option.
"""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")

#: How a refusal says what a duration looks like.
EXAMPLES = "e.g. '10s', '1m30s', '500ms', or a number of seconds"


def duration_seconds(text: str | float | int, *, positive: bool = False) -> float:
    """Seconds in ``text`` (a duration, or already a number), finite and >= 0 (> 0 when
    ``positive``); ValueError saying what is wrong, quoting ``text``, otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        raw = text.strip()
        try:
            seconds = float(raw)
        except ValueError:
            parts = _PART.findall(raw)
            if not parts or "".join(n + u for n, u in parts) != raw:
                raise ValueError(f"{text!r} is not a duration ({EXAMPLES})") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"{text!r} is not a duration ({EXAMPLES})")
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a finite duration")
    if seconds < 0:
        raise ValueError(f"{text!r} is negative")
    if positive and seconds == 0:
        raise ValueError(f"{text!r} is not more than 0 seconds")
    return seconds
