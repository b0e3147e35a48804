"""The seam between where instances come from (Consul) and what balances over them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from consul_discovery.client.config import ServiceConfig
from consul_discovery.client.instance import Resolution
from consul_discovery.client.target import Target

Listener = Callable[[Resolution], None]


@dataclass(frozen=True, slots=True)
class WatchStats:
    """One watch's counters: polls started, polls that failed, the index it sends, and
    the failed polls the agent rate-limited (429; counted in ``errors`` too).

    Of its last answer: the ``server`` that gave it (None with a single address),
    ``X-Consul-LastContact`` in seconds and ``X-Consul-KnownLeader`` (None: not sent).
    ``from_snapshot`` while the target is served from the on-disk snapshot (Consul
    unreachable since start), with the snapshot's ``snapshot_age`` in seconds.
    """

    requests: int
    errors: int
    index: int
    rate_limited: int = 0
    server: str | None = None
    last_contact: float | None = None
    known_leader: bool | None = None
    from_snapshot: bool = False
    snapshot_age: float | None = None


@dataclass(frozen=True, slots=True)
class WatchKey:
    """What one watch (and its listeners) is keyed by: the Target, and the config fields
    that change how its Resolution is built (panic threshold, vanish grace)."""

    target: Target
    panic_threshold: float | None
    vanish_grace: float

    @classmethod
    def of(cls, what: str | Target, service_config: Callable[[str], ServiceConfig]) -> WatchKey:
        """The key a name or Target means (a name: ``Target.of(name, service_config(name))``)."""
        if isinstance(what, Target):
            target, config = what, service_config(what.service)
        elif isinstance(what, str) and what:
            config = service_config(what)
            target = Target.of(what, config)
        else:
            raise TypeError(f"expected a service name or a Target; got {what!r}")
        return cls(target, config.panic_threshold, config.vanish_grace)


class InstanceSource(Protocol):
    """Something that resolves a service (name or Target) and keeps it fresh.

    ``resolve`` returns the current Resolution; on the first call for a target it may
    block (up to ``timeout`` seconds) to fetch it, and after that it must return the
    cached value without touching the network. ``subscribe`` registers a listener that
    is called, from the source's own thread, with every new complete Resolution.
    """

    def resolve(self, service: str | Target, timeout: float = 5.0) -> Resolution:
        """Return the target's current Resolution, fetching it the first time."""
        ...

    def cached(self, service: str | Target) -> Resolution | None:
        """The cached Resolution, without any I/O (None if not resolved yet)."""
        ...

    def subscribe(self, service: str | Target, listener: Listener) -> None:
        """Call ``listener`` with each new Resolution of ``service``."""
        ...

    def unsubscribe(self, service: str | Target, listener: Listener) -> None:
        """Stop calling ``listener``."""
        ...

    def watch_stats(self, service: str | Target) -> WatchStats | None:
        """The target's watch counters (None if it is not watched)."""
        ...

    def close(self) -> None:
        """Stop every background watch."""
        ...
