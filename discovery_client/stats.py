"""What a client knows about its upstreams, as one typed, frozen snapshot.

``stats()`` of every transport (``ServiceClient``, ``DiscoveryTransport``,
``AsyncDiscoveryTransport``) returns a ``ClientStats``: one ``TargetStats`` per Target the
client has used (its resolution, freshness, call counters, retry budget and its watch's
request/error counts), each with one ``InstanceStats`` per instance in its current set.
Metrics (``consul_discovery.client.metrics``) read these fields, never dict keys;
``as_dict()`` gives plain JSON-able data (the CLI's ``--json``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from consul_discovery.client.source import WatchStats
from consul_discovery.client.target import Target

__all__ = ["ClientStats", "InstanceStats", "TargetStats", "WatchStats"]


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """One instance as the client balances over it: load, failures, ejection."""

    id: str
    address: str  # host:port
    health: str
    weight: int  # the Consul weight for its current health
    picks: int  # attempts sent to it
    in_flight: int
    failures: int  # failed attempts: connect error, timeout, or its own 5xx
    consecutive_failures: int
    retries: int  # attempts sent to it that were retries
    ejections: int
    ejected: bool
    ejected_for: float  # seconds of ejection left
    latency_ewma: float  # peak-EWMA latency estimate, seconds

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class TargetStats:
    """One Target: its resolution and freshness, call counters, retry budget, watch.

    ``cache_age``, ``stale`` and ``error`` are None until the target is first resolved;
    ``watch`` is None when the source keeps no watch for it.
    """

    target: Target
    policy: str
    index: int | None
    cache_age: float | None  # seconds since Consul last confirmed the set
    stale: bool | None  # serving last-known-good instances after a failed refresh
    error: str | None  # why the last refresh failed, while stale
    panic: bool | None
    held: tuple[str, ...]  # instances kept on trust (Consul forgot them)
    ejections: int
    requests: int  # calls made
    retries: int
    retries_denied: int  # retries the retry budget refused
    retry_budget: float  # tokens left
    failed_calls: int  # calls where no attempt got a response
    no_instance: int  # calls refused for lack of an instance
    watch: WatchStats | None
    instances: tuple[InstanceStats, ...]

    @property
    def service(self) -> str:
        """The service name."""
        return self.target.service

    @property
    def upstream(self) -> str:
        """The metric label: the service name, plus what else selects instances if anything."""
        return str(self.target)

    def instance(self, instance_id: str) -> InstanceStats:
        """The stats of ``instance_id`` (KeyError naming the known ids if absent)."""
        for inst in self.instances:
            if inst.id == instance_id:
                return inst
        known = ", ".join(i.id for i in self.instances) or "(none)"
        raise KeyError(f"no instance {instance_id!r} in {self.upstream}; have: {known}")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the Target as its fields, instances as a list)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        target = self.target
        data["target"] = {f.name: getattr(target, f.name) for f in fields(target)}
        data["upstream"] = self.upstream
        data["held"] = list(self.held)
        watch = self.watch
        data["watch"] = (
            None
            if watch is None
            else {"requests": watch.requests, "errors": watch.errors, "index": watch.index}
        )
        data["instances"] = [inst.as_dict() for inst in self.instances]
        return data


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Every Target a client has used, in the order it first used them."""

    targets: tuple[TargetStats, ...]

    def target(self, key: str | Target) -> TargetStats:
        """The stats of a Target, or of the (first) Target of a service name."""
        for stats in self.targets:
            if stats.target == key or stats.target.service == key:
                return stats
        known = ", ".join(s.upstream for s in self.targets) or "(none)"
        raise KeyError(f"no stats for {key!s}; the client has used: {known}")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: ``{"targets": [...]}``."""
        return {"targets": [t.as_dict() for t in self.targets]}
