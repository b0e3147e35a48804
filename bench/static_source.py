"""An InstanceSource with fixed loopback instances, for benchmarks that need no Consul."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from consul_discovery.client import Instance, Resolution, UnknownServiceError
from consul_discovery.client.target import service_of


class StaticSource:
    """``{service: [port, ...]}`` on 127.0.0.1; an empty list is a service with no instance."""

    def __init__(self, ports: Mapping[str, Sequence[int]]) -> None:
        now = time.monotonic()
        self.resolutions = {
            service: Resolution(
                service,
                tuple(Instance(f"{service}-{p}", service, "127.0.0.1", p) for p in plist),
                index=1,
                fetched_at=now,
            )
            for service, plist in ports.items()
        }

    def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        """The fixed instances of ``service``."""
        service = service_of(service)
        if service not in self.resolutions:
            raise UnknownServiceError(service, list(self.resolutions))
        return self.resolutions[service]

    def subscribe(self, service: str, listener: object) -> None:
        """Nothing ever changes."""

    def close(self) -> None:
        """Nothing to stop."""
