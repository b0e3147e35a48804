"""The seam between where instances come from (Consul) and what balances over them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from consul_discovery.client.instance import Resolution

Listener = Callable[[Resolution], None]


class InstanceSource(Protocol):
    """Something that resolves a service name to its instances and keeps them fresh.

    ``resolve`` returns the current Resolution; on the first call for a service it may
    block (up to ``timeout`` seconds) to fetch it, and after that it must return the
    cached value without touching the network. ``subscribe`` registers a listener that
    is called, from the source's own thread, with every new complete Resolution.
    """

    def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        """Return the service's current Resolution, fetching it the first time."""
        ...

    def subscribe(self, service: str, listener: Listener) -> None:
        """Call ``listener`` with each new Resolution of ``service``."""
        ...

    def close(self) -> None:
        """Stop every background watch."""
        ...
