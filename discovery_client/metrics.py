"""Prometheus metrics of a discovery client, read from its typed ``stats()``: two views.

Every transport (``ServiceClient``, ``DiscoveryTransport``, ``AsyncDiscoveryTransport``)
has the same ``stats()`` (consul_discovery.client.stats), so all publish the same series
under the same names: ``SERIES`` below, label ``upstream`` (the Target called: its service
name, plus what else selects its instances if anything; ``service`` is left to
Prometheus' target labels) and, per instance, ``instance_id`` (``instance`` is
Prometheus' own target label). Needs prometheus_client (the ``prometheus`` extra); the
rest of the client imports without it.

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
worker renders ``/metrics``; the pick path still pays nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from consul_discovery.extras import missing

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:
    raise missing(__name__, "prometheus", exc) from exc

from consul_discovery.client.stats import ClientStats

log = logging.getLogger("consul_discovery.client")

PREFIX = "discovery_client"


class HasStats(Protocol):
    """Anything with a typed ``stats()``: every transport, and the core itself."""

    def stats(self) -> ClientStats:
        """The client's current snapshot."""
        ...


@dataclass(frozen=True, slots=True)
class Series:
    """One published series: name (without prefix), kind, help, how workers combine a
    gauge (``mode``), and what it reads from a TargetStats or an InstanceStats."""

    name: str
    kind: str  # "counter" or "gauge"
    doc: str
    read: Callable[[Any], float | None]
    mode: str = "livemax"


def _opt(value: float | bool | None) -> float | None:
    return None if value is None else float(value)


TARGET_SERIES: tuple[Series, ...] = (
    Series("calls", "counter", "Calls made to the upstream", lambda t: t.requests),
    Series("retries", "counter", "Retry attempts made", lambda t: t.retries),
    Series("retry_budget_exhausted", "counter", "Retries refused by the retry budget",
           lambda t: t.retries_denied),
    Series("failed_calls", "counter", "Calls where no attempt got a response",
           lambda t: t.failed_calls),
    Series("no_instance", "counter", "Calls refused for lack of an instance",
           lambda t: t.no_instance),
    Series("watch_requests", "counter", "Consul queries made by the upstream's watch",
           lambda t: None if t.watch is None else t.watch.requests),
    Series("watch_errors", "counter", "Failed Consul queries of the upstream's watch",
           lambda t: None if t.watch is None else t.watch.errors),
    Series("consul_rate_limited", "counter",
           "Queries of the upstream's watch the agent answered 429 (this host over its budget)",
           lambda t: None if t.watch is None else t.watch.rate_limited),
    Series("instances", "gauge", "Instances in the current set", lambda t: len(t.instances)),
    Series("instances_held", "gauge", "Instances kept on trust (Consul forgot them)",
           lambda t: len(t.held)),
    Series("cache_age_seconds", "gauge", "Seconds since Consul last confirmed the set",
           lambda t: _opt(t.cache_age)),
    Series("cache_stale", "gauge", "1 while serving last-known-good instances",
           lambda t: _opt(t.stale)),
    Series("panic_mode", "gauge", "1 while balancing over all instances (panic mode)",
           lambda t: _opt(t.panic)),
    Series("from_snapshot", "gauge", "1 while serving the on-disk snapshot (cold start)",
           lambda t: None if t.watch is None else float(t.watch.from_snapshot)),
    Series("snapshot_age_seconds", "gauge", "Age of the snapshot in use (0: none)",
           lambda t: None if t.watch is None else t.watch.snapshot_age or 0.0),
)  # fmt: skip
INSTANCE_SERIES: tuple[Series, ...] = (
    Series("attempts", "counter", "Attempts sent to the instance (picks)", lambda i: i.picks),
    Series("attempt_failures", "counter", "Failed attempts (connect error, timeout, 5xx)",
           lambda i: i.failures),
    Series("instance_retries", "counter", "Retry attempts sent to the instance",
           lambda i: i.retries),
    Series("ejections", "counter", "Times the instance was ejected (outlier detection)",
           lambda i: i.ejections),
    Series("in_flight", "gauge", "Attempts outstanding on the instance", lambda i: i.in_flight,
           "livesum"),
    Series("instance_ejected", "gauge", "1 while the instance is ejected",
           lambda i: float(i.ejected)),
    Series("instance_latency_ewma_seconds", "gauge", "Peak-EWMA latency estimate",
           lambda i: i.latency_ewma),
)  # fmt: skip
SERIES = TARGET_SERIES + INSTANCE_SERIES
TARGET_LABELS = ("upstream",)
INSTANCE_LABELS = ("upstream", "instance_id")


def _samples(
    stats: ClientStats,
) -> Iterator[tuple[Series, tuple[str, ...], float | None]]:
    """(series, label values, value) for every target and instance of a snapshot."""
    for target in stats.targets:
        labels = (target.upstream,)
        for series in TARGET_SERIES:
            yield series, labels, series.read(target)
        for inst in target.instances:
            inst_labels = (target.upstream, inst.id)
            for series in INSTANCE_SERIES:
                yield series, inst_labels, series.read(inst)


def _family(series: Series) -> Metric:
    cls = CounterMetricFamily if series.kind == "counter" else GaugeMetricFamily
    labels = INSTANCE_LABELS if series in INSTANCE_SERIES else TARGET_LABELS
    return cls(f"{PREFIX}_{series.name}", series.doc, labels=list(labels))


class ClientCollector(Collector):
    """Exposes one client's stats at scrape time; holds the client weakly."""

    def __init__(self, client: HasStats) -> None:
        self._client = weakref.ref(client)

    def collect(self) -> Iterator[Metric]:
        """Yield one family per series, with a sample per upstream / instance."""
        families = {series.name: _family(series) for series in SERIES}
        client = self._client()
        if client is not None:
            for series, labels, value in _samples(client.stats()):
                if value is not None:
                    families[series.name].add_metric(list(labels), float(value))
        yield from families.values()


# ---- the process-wide, multiprocess-safe view ---------------------------------------


@functools.cache
def _metrics(registry: CollectorRegistry) -> dict[str, Any]:
    # One set per registry, shared by every client of the process.
    made: dict[str, Any] = {}
    for series in SERIES:
        labels = INSTANCE_LABELS if series in INSTANCE_SERIES else TARGET_LABELS
        name = f"{PREFIX}_{series.name}"
        if series.kind == "counter":
            made[series.name] = Counter(name, series.doc, labels, registry=registry)
        else:
            made[series.name] = Gauge(name, series.doc, labels, registry=registry,
                                      multiprocess_mode=series.mode)  # fmt: skip
    return made


class ClientMetricsPublisher:
    """Copies one client's ``stats()`` into process-wide Prometheus series."""

    def __init__(
        self,
        client: HasStats,
        *,
        registry: CollectorRegistry = REGISTRY,
        interval: float = 1.0,
    ) -> None:
        self._client = weakref.ref(client)
        self._metrics = _metrics(registry)
        self._interval = interval
        self._lock = threading.Lock()  # serialises publish(): thread and /metrics renders
        self._seen: dict[tuple[str, ...], float] = {}  # counter values copied; under _lock
        self._instances: set[tuple[str, ...]] = set()  # instances with gauges; under _lock
        self._stop = threading.Event()

    def publish(self) -> None:
        """Copy the client's current stats (no-op once the client is gone)."""
        client = self._client()
        if client is None:
            return
        stats = client.stats()
        with self._lock:
            present: set[tuple[str, ...]] = set()
            for series, labels, value in _samples(stats):
                if len(labels) == 2:
                    present.add(labels)
                if value is None:
                    continue
                if series.kind == "counter":
                    self._advance(series.name, labels, value)
                else:
                    self._metrics[series.name].labels(*labels).set(value)
            for gone in self._instances - present:  # left the set: its live gauges go to 0
                for series in INSTANCE_SERIES:
                    if series.kind == "gauge":
                        self._metrics[series.name].labels(*gone).set(0)
            self._instances = present

    def _advance(self, name: str, labels: tuple[str, ...], value: float) -> None:
        key = (name, *labels)
        last = self._seen.get(key, 0.0)
        delta = value - last if value >= last else value  # went backwards: a new counter
        child = self._metrics[name].labels(*labels)  # a series from 0 on, not from its 1st
        if delta > 0:
            child.inc(delta)
        self._seen[key] = value

    def start(self) -> ClientMetricsPublisher:
        """Publish every ``interval`` from a daemon thread until ``close`` or the client goes."""
        threading.Thread(target=self._run, name="discovery-metrics", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop the background thread after its current copy."""
        self._stop.set()

    stop = close  # the name it had before stop methods were named alike

    def _run(self) -> None:
        while not self._stop.wait(self._interval) and self._client() is not None:
            try:
                self.publish()
            except Exception:  # metrics must never take a worker down
                log.exception("discovery_client: publishing metrics failed")


__all__ = [
    "INSTANCE_SERIES",
    "SERIES",
    "TARGET_SERIES",
    "ClientCollector",
    "ClientMetricsPublisher",
]
