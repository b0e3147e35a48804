"""Health-check specs: how Consul decides whether an instance is passing.

Three kinds, one frozen value each: ``HttpCheck`` (Consul GETs the service's own
``/health``), ``TcpCheck`` (Consul opens a TCP connection) and ``TtlCheck`` (the
registrar heartbeats the result of the service's health function). All share the
removal and flap-damping settings of ``CheckSpec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consul_discovery.connection.addresses import host_port, http_url
from consul_discovery.registry.durations import format_duration

#: Consul's floor for a check interval (agent/checks: MinInterval).
MIN_INTERVAL = 1.0
#: Consul's floor for DeregisterCriticalServiceAfter.
MIN_DEREGISTER_AFTER = 60.0
#: The longest check interval (TTL) and timeout the settings take: longer is a typo.
#: (Consul reads them as Go durations, which end near 292 years.)
MAX_INTERVAL = 24 * 3600.0
#: The longest a crashed instance may stay registered before Consul removes it.
MAX_DEREGISTER_AFTER = 30 * 24 * 3600.0


@dataclass(frozen=True)
class CheckSpec:
    """Settings every check kind shares.

    ``interval`` is how often the check runs (TTL: the TTL itself). ``deregister_after``
    removes a crashed instance that stayed critical that long. ``success_before_passing``
    and ``failures_before_critical`` damp flapping (Consul counts consecutive results).
    """

    interval: float = 10.0
    timeout: float | None = None
    check_id: str | None = None
    deregister_after: float = 60.0
    success_before_passing: int = 0
    failures_before_critical: int = 0

    def definition(self, address: str, port: int, check_id: str, name: str) -> dict[str, Any]:
        """The check as Consul's service-registration JSON wants it."""
        body: dict[str, Any] = {
            "CheckID": check_id,
            "Name": name,
            "DeregisterCriticalServiceAfter": format_duration(self.deregister_after),
        }
        if self.success_before_passing:
            body["SuccessBeforePassing"] = self.success_before_passing
        if self.failures_before_critical:
            body["FailuresBeforeCritical"] = self.failures_before_critical
        body.update(self._probe(address, port))
        return body

    def _probe(self, address: str, port: int) -> dict[str, Any]:
        raise NotImplementedError

    def _timing(self) -> dict[str, Any]:
        timing = {"Interval": format_duration(self.interval)}
        if self.timeout is not None:
            timing["Timeout"] = format_duration(self.timeout)
        return timing


@dataclass(frozen=True)
class HttpCheck(CheckSpec):
    """Consul GETs ``http://address:port{path}``; 2xx is passing, 429 warning, else critical."""

    path: str = "/health"

    def url(self, address: str, port: int) -> str:
        """The URL Consul will probe."""
        return http_url(address, port) + self.path

    def _probe(self, address: str, port: int) -> dict[str, Any]:
        return {"HTTP": self.url(address, port), "Method": "GET", **self._timing()}


@dataclass(frozen=True)
class TcpCheck(CheckSpec):
    """Consul connects to ``address:port``; an accepted connection is passing."""

    def _probe(self, address: str, port: int) -> dict[str, Any]:
        return {"TCP": host_port(address, port), **self._timing()}


@dataclass(frozen=True)
class TtlCheck(CheckSpec):
    """The registrar reports the service's own health every ``interval / 3``.

    Consul marks the check critical if no report arrives within ``interval`` (the TTL).
    """

    @property
    def heartbeat(self) -> float:
        """How often the registrar reports: three reports per TTL."""
        return self.interval / 3

    def _probe(self, address: str, port: int) -> dict[str, Any]:
        return {"TTL": format_duration(self.interval)}
