"""Client-side service discovery and load balancing over Consul.

Watch healthy instances (ConsulSource), balance over an immutable snapshot (Balancer,
five policies), call by name with retries on other instances (ServiceClient), or plug
discovery into an existing requests.Session (DiscoveryAdapter), httpx.Client
(DiscoveryTransport) or httpx.AsyncClient (AsyncDiscoveryTransport, on an event loop).
"""

from discovery_client.adapter import DiscoveryAdapter
from discovery_client.balancer import Balancer
from discovery_client.budget import RetryBudget
from discovery_client.client import ServiceClient
from discovery_client.config import POLICIES, ServiceConfig
from discovery_client.consul_source import ConsulSource
from discovery_client.ejection import EjectionPolicy
from discovery_client.errors import (
    AllAttemptsFailedError,
    ConsulPermissionError,
    ConsulQueryError,
    ConsulUnavailableError,
    DiscoveryError,
    NoHealthyInstanceError,
    UnknownServiceError,
)
from discovery_client.httpx_transport import AsyncDiscoveryTransport, DiscoveryTransport
from discovery_client.instance import Instance, Resolution
from discovery_client.load import Endpoint, InstanceLoad
from discovery_client.picker import Picker, build_picker
from discovery_client.retry import IDEMPOTENT_METHODS, RETRYABLE_STATUSES, RetryPolicy
from discovery_client.source import InstanceSource

__all__ = [
    "IDEMPOTENT_METHODS",
    "POLICIES",
    "RETRYABLE_STATUSES",
    "AllAttemptsFailedError",
    "AsyncDiscoveryTransport",
    "Balancer",
    "ConsulPermissionError",
    "ConsulQueryError",
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
    "NoHealthyInstanceError",
    "Picker",
    "Resolution",
    "RetryBudget",
    "RetryPolicy",
    "ServiceClient",
    "ServiceConfig",
    "UnknownServiceError",
    "build_picker",
]
