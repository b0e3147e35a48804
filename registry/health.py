"""The service's own health: named check functions evaluated into a ``HealthReport``.

A check function returns None or True when its dependency is fine; it fails by
returning False or raising. ``/health`` (Flask extension) and the TTL heartbeat both
use the same evaluation, so Consul sees what ``/health`` says.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from consul_discovery.registry.inherited import forget_in_children

PASSING = "passing"
CRITICAL = "critical"

CheckFn = Callable[[], object]


@dataclass(frozen=True)
class HealthReport:
    """The result of one evaluation: overall status plus one entry per named check."""

    status: str
    checks: dict[str, dict[str, str]] = field(default_factory=dict)  # read-only by convention

    @property
    def passing(self) -> bool:
        """True when every check passed."""
        return self.status == PASSING

    def to_json(self) -> dict[str, Any]:
        """The body ``/health`` returns."""
        return {"status": self.status, "checks": self.checks}

    def output(self) -> str:
        """A one-line summary for Consul's check Output."""
        failing = [
            f"{n}: {c.get('error', 'failed')}"
            for n, c in self.checks.items()
            if c["status"] != PASSING
        ]
        return "; ".join(failing) if failing else "all checks passing"


class HealthChecks:
    """A thread-safe set of named check functions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, CheckFn] = {}  # guarded by _lock; written by app setup code

    def add(self, name: str, fn: CheckFn) -> None:
        """Add (or replace) the check called ``name``."""
        with self._lock:
            self._checks[name] = fn

    def evaluate(self) -> HealthReport:
        """Run every check now and summarise."""
        with self._lock:
            checks = list(self._checks.items())
        results: dict[str, dict[str, str]] = {}
        for name, fn in checks:
            try:
                ok = fn()
            except Exception as exc:  # a check's failure is data, not an error
                results[name] = {"status": CRITICAL, "error": f"{type(exc).__name__}: {exc}"}
                continue
            if ok is None or ok is True:
                results[name] = {"status": PASSING}
            else:
                results[name] = {"status": CRITICAL, "error": f"returned {ok!r}"}
        overall = PASSING if all(r["status"] == PASSING for r in results.values()) else CRITICAL
        return HealthReport(overall, results)


def http_probe(
    url: str, timeout: float = 2.0, session: requests.Session | None = None
) -> Callable[[], HealthReport]:
    """A health function that GETs ``url`` (e.g. the instance's own /health over loopback).

    Used by the gunicorn master, which has no app loaded: 200 is passing, anything
    else (or no answer) is critical. ``session``: a Connect-native instance's mesh session.
    """
    session = session or requests.Session()
    parts = urlsplit(url)
    if parts.hostname is not None:  # a worker forked mid-probe must not keep it open
        forget_in_children(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    def probe() -> HealthReport:
        try:
            response = session.get(url, timeout=timeout)
        except requests.RequestException as exc:
            return HealthReport(CRITICAL, {"http": {"status": CRITICAL, "error": str(exc)}})
        try:
            body = response.json()
            checks = body.get("checks", {}) if isinstance(body, dict) else {}
        except ValueError:
            checks = {}
        if response.status_code == 200:
            return HealthReport(PASSING, checks)
        checks = checks or {"http": {"status": CRITICAL, "error": f"HTTP {response.status_code}"}}
        return HealthReport(CRITICAL, checks)

    return probe
