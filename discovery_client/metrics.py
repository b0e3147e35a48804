"""Prometheus metrics of a ServiceClient, read from its ``stats()``: two views.

``ClientCollector``: a custom Collector over one client's ``stats()`` at scrape time, in
the client's own registry (``client.metrics_registry``): nothing is double-counted, the
pick path pays nothing, and tests may create any number of clients.

``ClientMetricsPublisher``: what a service's ``/metrics`` shows. A custom collector is
not aggregated across gunicorn workers (prometheus_client's multiprocess mode only
merges real metric objects), so the publisher copies ``stats()`` into process-wide
Counters and Gauges in the default registry: counters grow by the delta since the last
copy (a counter that went backwards, an instance that left and came back, starts again
from its new value), gauges are set, with a ``multiprocess_mode`` saying how workers
combine. It copies every ``interval`` from a thread of its own and whenever the serving
worker renders ``/metrics``; the pick path still pays nothing. Label ``upstream`` is the
service called (``service`` is left to Prometheus' target labels), ``instance_id`` its
instance (``instance`` is Prometheus' own target label).
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from consul_discovery.client.client import ServiceClient

log = logging.getLogger("consul_discovery.client")

PREFIX = "discovery_client"

# (stats key, metric suffix, kind, help)
_SERVICE_METRICS = (
    ("requests", "requests", "counter", "Calls made to the service"),
    ("retries", "retries", "counter", "Retry attempts made"),
    ("retries_denied", "retries_denied", "counter", "Retries refused by the retry budget"),
    ("failed_calls", "failed_calls", "counter", "Calls where no attempt got a response"),
    ("no_instance", "no_instance", "counter", "Calls refused for lack of an instance"),
    ("ejections", "ejections", "counter", "Outlier ejections"),
    ("cache_age", "cache_age_seconds", "gauge", "Seconds since Consul last confirmed the set"),
    ("stale", "cache_stale", "gauge", "1 while serving last-known-good instances"),
    ("from_snapshot", "from_snapshot", "gauge", "1 while serving the on-disk snapshot"),
    ("snapshot_age", "snapshot_age_seconds", "gauge", "Age of the snapshot in use (0: none)"),
    ("panic", "panic_mode", "gauge", "1 while balancing over all instances (panic mode)"),
)
_INSTANCE_METRICS = (
    ("picks", "instance_picks", "counter", "Attempts sent to the instance"),
    ("in_flight", "instance_in_flight", "gauge", "Attempts outstanding on the instance"),
    ("failures", "instance_failures", "counter", "Failed attempts (connect error, timeout, 5xx)"),
    ("retries", "instance_retries", "counter", "Retry attempts sent to the instance"),
    ("ejections", "instance_ejections", "counter", "Times the instance was ejected"),
    ("ejected", "instance_ejected", "gauge", "1 while the instance is ejected"),
    ("latency_ewma", "instance_latency_ewma_seconds", "gauge", "Peak-EWMA latency estimate"),
)


def _family(kind: str, name: str, doc: str, labels: list[str]) -> Metric:
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(f"{PREFIX}_{name}", doc, labels=labels)


class ClientCollector(Collector):
    """Exposes one ServiceClient's stats; holds the client weakly."""

    def __init__(self, client: ServiceClient) -> None:
        self._client = weakref.ref(client)

    def collect(self) -> Iterator[Metric]:
        """Yield one family per metric, with a sample per service / instance."""
        client = self._client()
        services = client.stats()["services"] if client is not None else {}
        families = {
            key: _family(kind, name, doc, ["service"]) for key, name, kind, doc in _SERVICE_METRICS
        }
        instances = {
            key: _family(kind, name, doc, ["service", "instance"])
            for key, name, kind, doc in _INSTANCE_METRICS
        }
        size = _family("gauge", "instances", "Instances in the current set", ["service"])
        held = _family(
            "gauge", "instances_held", "Instances kept on trust (Consul forgot them)", ["service"]
        )
        for service, snap in services.items():
            size.add_metric([service], len(snap["instances"]))
            held.add_metric([service], len(snap.get("held") or ()))
            for key, family in families.items():
                value = snap.get(key)
                if value is not None:
                    family.add_metric([service], float(value))
            for inst_id, inst in snap["instances"].items():
                for key, family in instances.items():
                    family.add_metric([service, inst_id], float(inst[key]))
        yield size
        yield held
        yield from families.values()
        yield from instances.values()


# ---- the process-wide, multiprocess-safe view ---------------------------------------

# (stats key, metric name, help): counters per upstream service
_SERVICE_COUNTERS = (
    ("requests", "calls", "Calls made to the upstream service"),
    ("retries", "retries", "Retry attempts made"),
    ("retries_denied", "retry_budget_exhausted", "Retries refused by the retry budget"),
    ("failed_calls", "failed_calls", "Calls where no attempt got a response"),
    ("no_instance", "no_instance", "Calls refused for lack of an instance"),
    ("watch_errors", "watch_errors", "Failed Consul queries of the service's watch"),
)
# counters per upstream instance
_INSTANCE_COUNTERS = (
    ("picks", "attempts", "Attempts sent to the instance (picks)"),
    ("failures", "attempt_failures", "Failed attempts (connect error, timeout, 5xx)"),
    ("ejections", "ejections", "Times the instance was ejected (outlier detection)"),
)
# (stats key, metric name, help, multiprocess_mode): gauges per upstream service
_SERVICE_GAUGES = (
    ("size", "instances", "Instances in the current set", "livemax"),
    ("cache_age", "cache_age_seconds", "Seconds since Consul last confirmed the set", "livemax"),
    ("stale", "cache_stale", "1 while serving last-known-good instances", "livemax"),
    ("from_snapshot", "from_snapshot", "1 while serving the on-disk snapshot", "livemax"),
    ("snapshot_age", "snapshot_age_seconds", "Age of the snapshot in use (0: none)", "livemax"),
)
_INSTANCE_GAUGES = (
    ("in_flight", "in_flight", "Attempts outstanding on the instance", "livesum"),
    ("ejected", "instance_ejected", "1 while the instance is ejected", "livemax"),
)


@functools.cache
def _series(registry: CollectorRegistry) -> dict[str, Any]:
    # One set per registry, shared by every client of the process.
    series: dict[str, Any] = {}
    for key, name, doc in _SERVICE_COUNTERS:
        series[key] = Counter(f"{PREFIX}_{name}", doc, ["upstream"], registry=registry)
    for key, name, doc in _INSTANCE_COUNTERS:
        series["instance_" + key] = Counter(
            f"{PREFIX}_{name}", doc, ["upstream", "instance_id"], registry=registry
        )
    for key, name, doc, mode in _SERVICE_GAUGES:
        series[key] = Gauge(
            f"{PREFIX}_{name}", doc, ["upstream"], multiprocess_mode=mode, registry=registry
        )
    for key, name, doc, mode in _INSTANCE_GAUGES:
        series["instance_" + key] = Gauge(
            f"{PREFIX}_{name}",
            doc,
            ["upstream", "instance_id"],
            multiprocess_mode=mode,
            registry=registry,
        )
    return series


class ClientMetricsPublisher:
    """Copies one ServiceClient's ``stats()`` into process-wide Prometheus series."""

    def __init__(
        self,
        client: ServiceClient,
        *,
        registry: CollectorRegistry = REGISTRY,
        interval: float = 1.0,
    ) -> None:
        self._client = weakref.ref(client)
        self._series = _series(registry)
        self._interval = interval
        self._lock = threading.Lock()  # serialises publish(): thread and /metrics renders
        self._seen: dict[tuple[str, ...], float] = {}  # counter values copied; under _lock
        self._instances: set[tuple[str, str]] = set()  # instances with gauges; under _lock
        self._stop = threading.Event()

    def publish(self) -> None:
        """Copy the client's current stats (no-op once the client is gone)."""
        client = self._client()
        if client is None:
            return
        source_stats = getattr(client.source, "watch_stats", None)
        services = client.stats()["services"]
        with self._lock:
            present: set[tuple[str, str]] = set()
            for upstream, snap in services.items():
                watch = source_stats(upstream) if source_stats is not None else None
                errors = watch.errors if watch is not None else None
                values = dict(snap, watch_errors=errors, size=len(snap["instances"]))
                for key, *_ in _SERVICE_COUNTERS:
                    self._advance((upstream, key), key, values.get(key), upstream)
                for key, *_ in _SERVICE_GAUGES:
                    if values.get(key) is not None:
                        self._series[key].labels(upstream).set(float(values[key]))
                for inst_id, inst in snap["instances"].items():
                    present.add((upstream, inst_id))
                    for key, *_ in _INSTANCE_COUNTERS:
                        name = "instance_" + key
                        self._advance((upstream, inst_id, key), name, inst[key], upstream, inst_id)
                    for key, *_ in _INSTANCE_GAUGES:
                        gauge = self._series["instance_" + key]
                        gauge.labels(upstream, inst_id).set(float(inst[key]))
            for gone in self._instances - present:  # left the set: its live gauges go to 0
                for key, *_ in _INSTANCE_GAUGES:
                    self._series["instance_" + key].labels(*gone).set(0)
            self._instances = present

    def _advance(self, seen_key: tuple[str, ...], name: str, value: Any, *labels: str) -> None:
        if value is None:
            return
        value = float(value)
        last = self._seen.get(seen_key, 0.0)
        delta = value - last if value >= last else value  # went backwards: a new counter
        child = self._series[name].labels(*labels)  # a series from 0 on, not from its 1st
        if delta > 0:
            child.inc(delta)
        self._seen[seen_key] = value

    def start(self) -> ClientMetricsPublisher:
        """Publish every ``interval`` from a daemon thread until ``stop`` or the client goes."""
        threading.Thread(target=self._run, name="discovery-metrics", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop the background thread after its current copy."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval) and self._client() is not None:
            try:
                self.publish()
            except Exception:  # metrics must never take a worker down
                log.exception("discovery_client: publishing metrics failed")
