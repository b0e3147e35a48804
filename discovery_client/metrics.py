"""Prometheus metrics of a ServiceClient, read from its ``stats()`` at scrape time.

A custom Collector rather than module-level Counters: nothing is double-counted, the
pick path pays nothing for metrics, and every client can have its own registry (so tests
may create any number of clients without duplicate-registration errors).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from discovery_client.client import ServiceClient

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
