"""The discovery client's own small value types: an instance and a resolved set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from consul_discovery.connection.addresses import http_url

Health = Literal["passing", "warning", "critical"]


def _frozen_map(values: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered instance of a service, as Consul reported it."""

    id: str
    service: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    weight_passing: int = 1
    weight_warning: int = 1
    health: Health = "passing"
    node: str = ""
    datacenter: str = ""
    maintenance: bool = False  # the service or its node is in Consul maintenance mode
    region: str = ""  # Consul's locality: the service's own, else its node's ("": none)
    zone: str = ""
    # Registered Connect-native (``Connect.Native``): it serves mTLS only, so a plain
    # target cannot call it (``Dial.of`` makes its Dial a refusal naming the fix).
    connect_native: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", _frozen_map(self.meta))
        object.__setattr__(self, "tags", tuple(self.tags))

    @property
    def base_url(self) -> str:
        """``http://address:port`` for this instance (IPv6 addresses bracketed)."""
        return http_url(self.address, self.port)

    @property
    def weight(self) -> int:
        """The Consul weight that applies to the instance's current health."""
        return self.weight_warning if self.health == "warning" else self.weight_passing


@dataclass(frozen=True, slots=True)
class Resolution:
    """A complete, consistent view of one service's instances at one Consul index.

    Every discovery event carries the complete set (never a delta). ``stale`` is true when
    the last refresh failed and these are the last-known-good instances; ``error`` then
    says why. ``fetched_at`` is a monotonic timestamp of the last successful refresh.
    ``held`` names the instances Consul no longer vouches for but that are kept on trust
    after an agent restart (``consul_discovery.client.preservation``). ``from_snapshot``
    is true for instances read from the on-disk snapshot because Consul could not be
    reached at start (then also ``stale``; ``fetched_at`` is when the snapshot was saved,
    so ``age`` is the snapshot's age).
    """

    service: str
    instances: tuple[Instance, ...]
    index: int
    fetched_at: float
    stale: bool = False
    error: str | None = None
    panic: bool = False
    held: tuple[str, ...] = ()
    from_snapshot: bool = False

    def age(self, now: float) -> float:
        """Seconds since the instances were last confirmed by Consul."""
        return max(0.0, now - self.fetched_at)
