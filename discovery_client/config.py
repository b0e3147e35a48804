"""Per-service settings of the discovery client, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass

from consul_discovery.client.preservation import DEFAULT_GRACE

POLICIES = (
    "round_robin",
    "random",
    "weighted",
    "least_request",
    "peak_ewma",
    "ring_hash",  # consistent hashing: a call's hash key picks (consul_discovery.client.hashing)
    "maglev",
)


class _AgentZone:
    """The type of ``AGENT_ZONE`` (one instance)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "AGENT_ZONE"

    def __reduce__(self) -> str:
        return "AGENT_ZONE"  # pickles as the module's one instance


#: ``ServiceConfig(zone=AGENT_ZONE)``: the caller's zone is its Consul agent's locality
#: zone, read once from the agent (``consul_discovery.client.agent_zone``).
AGENT_ZONE = _AgentZone()


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the client resolves and balances one service.

    ``filter`` is a Consul filter expression (e.g. ``"v2" in Service.Tags`` or
    ``Service.Meta.version == "1.4"``); ``tag`` a single required tag; ``datacenter``
    the Consul datacenter to ask (None: the agent's own). ``panic_threshold`` turns on
    panic mode: when fewer than that fraction of registered instances pass, balance over
    all registered instances instead (None: off; an empty passing set stays empty).
    ``vanish_grace`` is how long (seconds) instances that vanish right after Consul
    comes back (an agent restarted empty) are kept on trust; 0 believes Consul at once
    (the rule: ``consul_discovery.client.preservation``). ``prepared_query`` names a
    Consul prepared query that selects the service's instances instead of the health
    query (its own filters and failover to other datacenters, so not with ``filter`` or
    ``tag``; polled every ``min_interval``, Consul does not block on it). ``zone`` is
    the caller's own zone: calls prefer instances of that zone (``Instance.zone``) by
    Envoy's zone-aware rule, spilling to other zones only when it is short
    (``consul_discovery.client.locality``; None: off; not with ``ring_hash``/``maglev``);
    ``AGENT_ZONE``: the zone of the Consul agent the client reads from (its
    ``locality``, read once; no preference until it is known, none if the agent has no
    locality).
    ``connect`` calls the service through the mesh: its Connect-capable instances
    (native and sidecar proxies) over mutual TLS as the caller's identity
    (``consul_discovery.client.connect``).
    """

    policy: str = "least_request"
    filter: str | None = None
    tag: str | None = None
    datacenter: str | None = None
    panic_threshold: float | None = None
    vanish_grace: float = DEFAULT_GRACE
    prepared_query: str | None = None
    zone: str | _AgentZone | None = None
    connect: bool = False

    def __post_init__(self) -> None:
        if (
            self.zone is not None
            and self.zone is not AGENT_ZONE
            and (not isinstance(self.zone, str) or not self.zone)
        ):
            raise ValueError(f"zone must be None, a zone name or AGENT_ZONE; got {self.zone!r}")
        if self.zone is not None and self.policy in ("ring_hash", "maglev"):
            raise ValueError(f"zone-aware routing does not combine with {self.policy!r}")
        if self.prepared_query is not None and (
            not isinstance(self.prepared_query, str) or not self.prepared_query.strip()
        ):
            raise ValueError(
                f"prepared_query must be None or a query name; got {self.prepared_query!r}"
            )
        if self.prepared_query is not None and (self.filter or self.tag):
            given = " and ".join(n for n in ("filter", "tag") if getattr(self, n))
            raise ValueError(
                f"prepared_query {self.prepared_query!r} selects the instances itself; "
                f"{given} would be ignored: put it in the prepared query, or drop "
                f"prepared_query"
            )
        if not 0.0 <= self.vanish_grace <= 3600.0:
            raise ValueError(
                f"vanish_grace must be in [0, 3600] seconds; got {self.vanish_grace!r}"
            )
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {self.policy!r}")
        if self.panic_threshold is not None and not 0.0 < self.panic_threshold <= 1.0:
            raise ValueError(
                f"panic_threshold must be in (0, 1] or None; got {self.panic_threshold!r}"
            )
