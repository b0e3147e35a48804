"""The registrar's state as Prometheus gauges, correct under gunicorn's multiprocess mode.

Under gunicorn the registrar lives in the master, but ``/metrics`` is served by the
workers. With ``PROMETHEUS_MULTIPROC_DIR`` set (one directory per instance), the master
is one more process writing to that directory, so a gauge it sets reaches every worker's
``/metrics``. ``RegistrarMetrics`` copies the registrar's read-only state into gauges
once per ``interval`` from a thread of its own (never from the registrar's thread, whose
work it must not slow down), each write inside ``no_fork`` so a fork never lands while
prometheus_client's process-wide multiprocess lock is held.

Multiprocess housekeeping lives here too, because the gunicorn hooks that need it
(``on_starting`` cleans the directory, ``child_exit`` marks a dead worker) are the
registry's: :func:`clean_multiprocess_dir`, :func:`mark_worker_dead`.

Series (no labels: Prometheus' target labels say which instance):

* ``registry_registered``: 1 while the agent holds this instance's registration;
* ``registry_draining``: 1 from the start of the drain on;
* ``registry_consul_errors_total``: failed agent calls (register, reconcile, heartbeat);
* ``registry_last_consul_error_timestamp_seconds``: Unix time of the last one, 0 if none.

The series need ``prometheus_client`` (``pip install 'consul-discovery[prometheus]'``);
without it the integrations still register, and ``RegistrarMetrics`` publishes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import warnings
from pathlib import Path

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
except ImportError:  # no 'prometheus' extra: registration works, nothing is published
    PROMETHEUS = False
else:
    PROMETHEUS = True

from consul_discovery.registry.forksafe import no_fork
from consul_discovery.registry.registrar import Registrar, State

log = logging.getLogger("consul_discovery.registry")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The process's multiprocess metrics directory, or None when not in that mode."""
    raw = os.environ.get(MULTIPROC_ENV, "").strip()
    return Path(raw) if raw else None


def clean_multiprocess_dir() -> None:
    """Create the directory and remove the files of a previous run (the master, at start).

    Counters of a previous master's workers would otherwise be added to this run's.
    """
    path = multiprocess_dir()
    if path is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay: they are history)."""
    if multiprocess_dir() is None or not PROMETHEUS:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


@functools.cache
def _series(registry: CollectorRegistry) -> tuple[Gauge, Gauge, Counter, Gauge]:
    # Made on first use, not at import: in multiprocess mode a metric without labels
    # opens its file when constructed, and the master cleans the directory first.
    # Cached: a registry takes each name once, and hooks may run again (HUP, tests).
    return (
        Gauge(
            "registry_registered",
            "1 while the Consul agent holds this instance's registration",
            multiprocess_mode="livemax",
            registry=registry,
        ),
        Gauge(
            "registry_draining",
            "1 once the instance has begun draining",
            multiprocess_mode="livemax",
            registry=registry,
        ),
        Counter(
            "registry_consul_errors",
            "Failed calls to the Consul agent (register, reconcile, heartbeat)",
            registry=registry,
        ),
        Gauge(
            "registry_last_consul_error_timestamp_seconds",
            "Unix time of the last failed call to the Consul agent (0: none yet)",
            multiprocess_mode="max",
            registry=registry,
        ),
    )


class RegistrarMetrics:
    """Publishes one Registrar's state into gauges every ``interval`` seconds.

    Without ``prometheus_client`` installed, ``enabled`` is False and every method is a
    no-op (no thread, no series).
    """

    def __init__(
        self,
        registrar: Registrar,
        *,
        registry: CollectorRegistry | None = None,
        interval: float = 1.0,
    ) -> None:
        self.enabled = PROMETHEUS
        if self.enabled:
            series = _series(REGISTRY if registry is None else registry)
            self.registered, self.draining, self.errors, self.last_error = series
        self._registrar = registrar
        self._interval = interval
        self._errors_seen = 0  # the publisher thread (or publish() callers) only
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        """Copy the registrar's current state into the gauges."""
        if not self.enabled:
            return
        registrar = self._registrar
        state = registrar.state
        errors = registrar.consul_errors
        last = registrar.last_error_at
        with no_fork():
            self.registered.set(1 if state is State.REGISTERED else 0)
            self.draining.set(1 if state in (State.DRAINING, State.STOPPED) else 0)
            if errors > self._errors_seen:
                self.errors.inc(errors - self._errors_seen)
                self._errors_seen = errors
            self.last_error.set(last or 0.0)

    def start(self) -> RegistrarMetrics:
        """Publish now and then every ``interval`` from a daemon thread."""
        if not self.enabled:
            log.debug("registry: prometheus_client is not installed; no registrar gauges")
            return self
        self.publish()
        self._thread = threading.Thread(target=self._run, name="registry-metrics", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Publish a last time and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval + 1)
        self.publish()

    def stop(self) -> None:
        """Deprecated name of ``close``."""
        warnings.warn(
            "RegistrarMetrics.stop() is deprecated; use close()", DeprecationWarning, stacklevel=2
        )
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.publish()
            except Exception:  # metrics must never take the master down
                log.exception("registry: publishing registrar metrics failed")
