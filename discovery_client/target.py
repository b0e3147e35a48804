"""Target: what a client resolves and balances over, as one frozen value (the watch key).

After grpc-go's ClientConn per target: a Target names one service and what selects its
instances (datacenter, Consul filter expression, tag) and how they are reached
(``connect``: Connect mTLS, the ``/v1/health/connect/`` endpoint and an SSL context per
target). The client core keeps one state (balancer, retry budget, counters) per Target and
the Consul sources key their watches and listeners by it, so two services, or one service
asked for in two datacenters, never share a set.

A service called plainly maps to one Target, built from its ServiceConfig by
``Target.of``; a service with a discovery chain (``consul_discovery.client.chain``) is
called through the Targets its chain names: a subset (its filter, ``only_passing``), the
same service in another datacenter, another service. A ``prepared_query`` Target names
its instances by a Consul prepared query instead (``/v1/query/<name>/execute``: the
query's own service, filters and failover to other datacenters). Fields added later come
with a default, so every Target built before keeps its meaning and its hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consul_discovery.client.config import ServiceConfig


@dataclass(frozen=True, slots=True)
class Target:
    """One service and the instances of it to use: datacenter, filter, tag, Connect or not.

    ``datacenter`` None is the agent's own; ``filter`` a Consul filter expression
    (``Service.Meta.version == "2"``); ``tag`` a single required tag; ``connect`` asks
    for Connect-capable instances (``/v1/health/connect/<service>``), reached over mTLS.
    ``only_passing`` leaves out instances whose checks warn (a chain subset's
    ``OnlyPassing``; by default a warning instance is kept, derated by its weight).
    ``prepared_query`` names a Consul prepared query that selects the instances instead
    of the health query (polled: Consul does not block on it).
    """

    service: str
    datacenter: str | None = None
    filter: str | None = None
    tag: str | None = None
    connect: bool = False
    only_passing: bool = False
    prepared_query: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.service, str) or not self.service:
            raise ValueError(f"Target.service must be a non-empty string; got {self.service!r}")
        for name in ("datacenter", "filter", "tag", "prepared_query"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"Target.{name} must be None or a non-empty string; got {value!r}")

    @classmethod
    def of(cls, service: str, config: ServiceConfig) -> Target:
        """The Target a service name means under its ServiceConfig (datacenter, filter, tag,
        prepared query, Connect)."""
        return cls(
            service,
            datacenter=config.datacenter or None,
            filter=config.filter or None,
            tag=config.tag or None,
            prepared_query=config.prepared_query or None,
            connect=config.connect,
        )

    def __str__(self) -> str:
        """The service name, followed by whatever else selects the instances (for logs)."""
        pairs = (
            ("query", self.prepared_query),
            ("dc", self.datacenter),
            ("tag", self.tag),
            ("filter", self.filter),
        )
        extra = [f"{name}={value}" for name, value in pairs if value is not None]
        if self.only_passing:
            extra.append("only_passing")
        if self.connect:
            extra.append("connect")
        return f"{self.service}[{', '.join(extra)}]" if extra else self.service


def service_of(what: str | Target) -> str:
    """The service a source is asked about: a name as it is, or a Target's service.

    A simple InstanceSource keyed by service name calls this on whatever it is asked with
    (the client core asks with Targets).
    """
    return what.service if isinstance(what, Target) else what
