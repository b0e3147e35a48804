"""Client-side service discovery and load balancing over Consul.

Watch healthy instances (ConsulSource), balance over an immutable snapshot (Balancer,
five policies), call by name with retries on other instances (ServiceClient), or plug
discovery into an existing requests.Session (DiscoveryAdapter), httpx.Client
(DiscoveryTransport) or httpx.AsyncClient (AsyncDiscoveryTransport, on an event loop).
Every one of them is a shell over one transport-free core (DiscoveryCore, per Target)
and reports the same typed stats (ClientStats).

The httpx transports need the ``httpx`` extra; they are imported on first use, so the
package itself needs only the core's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from consul_discovery.client.adapter import DiscoveryAdapter
from consul_discovery.client.balancer import Balancer
from consul_discovery.client.budget import RetryBudget
from consul_discovery.client.client import ServiceClient
from consul_discovery.client.config import AGENT_ZONE, POLICIES, ServiceConfig
from consul_discovery.client.consul_source import ConsulSource
from consul_discovery.client.ejection import EjectionPolicy
from consul_discovery.client.errors import (
    AllAttemptsFailedError,
    ConsulPermissionError,
    ConsulQueryError,
    ConsulRateLimitedError,
    ConsulUnavailableError,
    DiscoveryError,
    NoHealthyInstanceError,
    UnknownServiceError,
)
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.load import Endpoint, InstanceLoad
from consul_discovery.client.picker import Picker, build_picker
from consul_discovery.client.retry import IDEMPOTENT_METHODS, RETRYABLE_STATUSES, RetryPolicy
from consul_discovery.client.source import InstanceSource
from consul_discovery.client.stats import ClientStats, InstanceStats, TargetStats
from consul_discovery.client.target import Target

if TYPE_CHECKING:
    from consul_discovery.client.httpx_transport import (
        AsyncDiscoveryTransport,
        DiscoveryTransport,
    )

#: Names served on first access from the module that needs an extra (name -> module).
_LAZY = {
    "AsyncDiscoveryTransport": "consul_discovery.client.httpx_transport",
    "DiscoveryTransport": "consul_discovery.client.httpx_transport",
}


def __getattr__(name: str) -> Any:
    """Import the httpx transports on first access (they need the ``httpx`` extra)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AGENT_ZONE",
    "IDEMPOTENT_METHODS",
    "POLICIES",
    "RETRYABLE_STATUSES",
    "AllAttemptsFailedError",
    "AsyncDiscoveryTransport",
    "Balancer",
    "ClientStats",
    "ConsulPermissionError",
    "ConsulQueryError",
    "ConsulRateLimitedError",
    "ConsulSource",
    "ConsulUnavailableError",
    "DiscoveryAdapter",
    "DiscoveryError",
    "DiscoveryTransport",
    "EjectionPolicy",
    "Endpoint",
    "Instance",
    "InstanceLoad",
    "InstanceSource",
    "InstanceStats",
    "NoHealthyInstanceError",
    "Picker",
    "Resolution",
    "RetryBudget",
    "RetryPolicy",
    "ServiceClient",
    "ServiceConfig",
    "Target",
    "TargetStats",
    "UnknownServiceError",
    "build_picker",
]
