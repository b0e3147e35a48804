"""One-shot catalog reads of a threaded source (for the CLI and operators; always network).

``ConsulSource`` inherits them: each read is one exchange of ``health_query`` run on the
source's loop and awaited here, on the caller's thread (never the loop's), bounded by
the request timeout.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from consul_discovery.client.errors import ConsulUnavailableError, DiscoveryError
from consul_discovery.client.health_query import (
    DISCOVERY_ERRORS,
    instances_exchange,
    services_exchange,
    what,
)
from consul_discovery.client.instance import Instance
from consul_discovery.client.target import Target
from consul_discovery.connection.exchange import Request, Response, TransportError, arun
from consul_discovery.connection.refusals import transport_error
from consul_discovery.connection.resource import Poll

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """One catalog service and how many of its instances are in each health state."""

    name: str
    passing: int
    warning: int
    critical: int

    @property
    def total(self) -> int:
        """Every registered instance, whatever its health."""
        return self.passing + self.warning + self.critical


class CatalogReads:
    """``list_services`` and ``list_instances`` for a source with ``_io`` (its loop and
    send), ``_table``, ``_options``, ``_timing``, ``address`` and ``connection``."""

    _io: Any
    _table: Any
    _options: Any
    _timing: Any
    address: str
    connection: Any

    def list_services(self) -> tuple[ServiceSummary, ...]:
        """Every service in the catalog with passing/warning/critical instance counts."""
        names = self._once(services_exchange(None, self._options, self.address), "the catalog")
        summaries = []
        for name in names:
            counts = {"passing": 0, "warning": 0, "critical": 0}
            for instance in self.list_instances(name):
                counts[instance.health] += 1
            summaries.append(ServiceSummary(name, **counts))
        return tuple(summaries)

    def list_instances(self, service: str | Target) -> tuple[Instance, ...]:
        """Every registered instance of ``service`` (all health states), fresh from Consul."""
        target = self._table.key(service).target
        poll = Poll(0, self._timing.wait, resolved=False)
        exchange = instances_exchange(target, poll, self._options, self.address)
        return self._once(exchange, what(target)).value

    def _once(self, exchange: Generator[Request, Response, T], about: str) -> T:
        if self._table.closed:
            raise DiscoveryError("ConsulSource is closed")
        timeout = self._options.request_timeout + self.connection.connect_timeout + 1.0
        try:
            return self._io.run(arun(exchange, self._io.send), timeout)
        except TransportError as exc:
            mapped = transport_error(exc, about, self.address, DISCOVERY_ERRORS)
            raise mapped from mapped.__cause__
        except TimeoutError as exc:
            raise ConsulUnavailableError(
                f"Consul at {self.address} gave no answer about {about} within {timeout:.0f}s"
            ) from exc
