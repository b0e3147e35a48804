"""What a denied request gets and leaves behind: a 403 JSON body, a metric, one log line.

The body names the caller's service (``{"error": "forbidden", "caller": "api", ...}``).
Every denial counts in ``mesh_requests_denied_total{caller,layer}`` (prometheus_client,
when installed; under gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` the workers' counts
merge like every other series) and in ``Denials.counts``. The log says it once per
caller and intentions index, at warning level, not once per request.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from consul_discovery.mesh.authorizer import Decision

log = logging.getLogger("consul_discovery.mesh")

_counter: Any = None  # the process's one Counter, made on first use (under _counter_lock)
_counter_lock = threading.Lock()


def _metric() -> Any:
    global _counter
    with _counter_lock:
        if _counter is None:
            try:
                from prometheus_client import Counter
            except ImportError:  # metrics are optional
                _counter = False
            else:
                _counter = Counter(
                    "mesh_requests_denied",
                    "Requests refused by intentions before they reached the app",
                    ["caller", "layer"],
                )
        return _counter or None


def forbidden_body(decision: Decision, destination: str) -> bytes:
    """The JSON body of a 403 for ``decision``."""
    return json.dumps(
        {
            "error": "forbidden",
            "caller": decision.caller or None,
            "destination": destination,
            "reason": decision.reason,
        }
    ).encode()


class Denials:
    """Counts denials per caller and logs each caller once per intentions index."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._lock = threading.Lock()
        self._logged: set[tuple[str, int]] = set()  # under _lock: (caller, intentions index)
        self.counts: dict[str, int] = {}  # under _lock: caller -> denials (read by tests)

    def record(self, decision: Decision, index: int = 0) -> None:
        """Count one denial; log it if this caller was not logged at this index."""
        caller = decision.caller or "-"
        with self._lock:
            self.counts[caller] = self.counts.get(caller, 0) + 1
            first = (caller, index) not in self._logged
            if first:
                self._logged.add((caller, index))
        metric = _metric()
        if metric is not None:
            metric.labels(caller=caller, layer=decision.layer).inc()
        if first:
            log.warning(
                "mesh: denied %s -> %s (%s): %s (logged once per caller)",
                caller,
                self.destination,
                decision.layer,
                decision.reason,
            )
