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
    (the rule: ``consul_discovery.client.preservation``). ``connect`` calls the
    service through the mesh: its Connect-capable instances (native and sidecar proxies)
    over mutual TLS as the caller's identity (``consul_discovery.client.connect``).
    """

    policy: str = "least_request"
    filter: str | None = None
    tag: str | None = None
    datacenter: str | None = None
    panic_threshold: float | None = None
    vanish_grace: float = DEFAULT_GRACE
    connect: bool = False

    def __post_init__(self) -> None:
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
