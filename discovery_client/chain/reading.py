"""What reading a discovery-chain answer shares: its error, Go durations, a field walker.

``Reader`` walks one answer and names, in words, every field that is set but neither
honoured nor safely ignorable (``Chain.unsupported``); ``ChainFormatError`` says where an
answer is not shaped as expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any


class ChainFormatError(ValueError):
    """Consul's discovery-chain answer is not shaped as expected; the message says where."""


#: Load-balancer policies Consul accepts, all of which have a picker here.
LB_POLICIES = frozenset({"", "least_request", "round_robin", "random", "ring_hash", "maglev"})

#: Envoy retry-on conditions that apply to an HTTP/1.1 client.
RETRY_CONDITIONS = frozenset(
    {"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "retriable-status-codes"}
)
#: Conditions that can never occur without Envoy or HTTP/2 and gRPC between us and the
#: instance (Envoy's rate-limit header, REFUSED_STREAM, grpc-status): accepted, no effect.
INERT_RETRY_CONDITIONS = frozenset(
    {
        "envoy-ratelimited",
        "refused-stream",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: Any, where: str) -> float | None:
    """Seconds from a Go duration: a string ("250ms", "1m30s") or integer nanoseconds.

    Consul writes both forms in one answer (a resolver's ``RequestTimeout`` is integer
    nanoseconds, its ``ConnectTimeout`` a string). None, "" and 0 mean unset.
    """
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise ChainFormatError(f"{where}: a duration, not {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ChainFormatError(f"{where}: negative duration {value!r}")
        return float(value) / 1e9
    if not isinstance(value, str):
        raise ChainFormatError(f"{where}: a duration, not {value!r}")
    text = value.strip()
    if text == "0":
        return None
    pos, total = 0, 0.0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            raise ChainFormatError(f"{where}: not a Go duration: {value!r}")
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if not text:
        raise ChainFormatError(f"{where}: empty duration")
    return total or None


def _is_set(value: Any) -> bool:
    # Go's omitempty: false, 0, "", empty lists and maps carry no meaning.
    return value not in (None, False, 0, "", [], {})


class Reader:
    """Walks one answer, collecting unsupported features in words."""

    def __init__(self) -> None:
        self.unsupported: list[str] = []  # owned by this one parse

    def obj(self, value: Any, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ChainFormatError(f"{where}: an object, not {type(value).__name__}")
        return value

    def seq(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ChainFormatError(f"{where}: a list, not {type(value).__name__}")
        return value

    def text(self, value: Any, where: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ChainFormatError(f"{where}: a string, not {value!r}")
        return value

    def keys(
        self,
        data: Mapping[str, Any],
        where: str,
        known: Iterable[str],
        ignored: Iterable[str] = (),
    ) -> None:
        """Name every set key that is neither honoured nor safely ignorable."""
        allowed = set(known) | set(ignored)
        for key, value in data.items():
            if key not in allowed and _is_set(value):
                self.unsupported.append(f"{where}.{key} ({value!r})")

    def unsupported_if_set(self, data: Mapping[str, Any], where: str, *keys: str) -> None:
        for key in keys:
            if _is_set(data.get(key)):
                self.unsupported.append(f"{where}.{key} ({data[key]!r})")

    def default_tenancy(self, data: Mapping[str, Any], where: str) -> None:
        """Namespaces and admin partitions other than "default" are Consul Enterprise."""
        for key in ("Namespace", "Partition"):
            value = data.get(key)
            if value not in (None, "", "default"):
                self.unsupported.append(f"{where}.{key} {value!r} (Consul Enterprise)")
