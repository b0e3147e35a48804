"""The discovery client a service calls other services through.

Tests inject any object with ``request(service, method, path, **kwargs)`` as
``config["DISCOVERY_CLIENT"]``. Otherwise a ``discovery_client.ServiceClient`` is built
on first use (so under gunicorn each worker builds its own after the fork, and its
watch threads live in that worker) against ``CONSUL_HTTP_ADDR``, and its counts are
published to the service's ``/metrics`` (``consul_discovery.client.metrics``).

``DISCOVERY_CONNECT`` (environment) says which upstreams are called through Consul's
mesh (``ServiceConfig(connect=True)``: their Connect-native instances, mTLS with this
process's identity, the leaf of ``SERVICE_NAME``): ``1`` every one, a comma-separated
list of service names those, empty or ``0`` none (the default: plain HTTP, as before).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import requests
from flask import Flask

from services.common.metrics import before_render

if TYPE_CHECKING:
    from consul_discovery.client import ServiceClient


class Caller(Protocol):
    """What services need from a discovery client: call a service by name."""

    def request(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request to some healthy instance of ``service``."""
        ...


_lock = threading.Lock()

_ALL = ("1", "true", "yes", "on")
_NONE = ("", "0", "false", "no", "off")


def connect_setting(environ: Mapping[str, str] | None = None) -> bool | frozenset[str]:
    """DISCOVERY_CONNECT: True (every upstream in the mesh), the service names, or False."""
    env = os.environ if environ is None else environ
    raw = env.get("DISCOVERY_CONNECT", "").strip()
    if raw.lower() in _ALL:
        return True
    if raw.lower() in _NONE:
        return False
    names = frozenset(name.strip() for name in raw.split(","))
    if "" in names:
        raise ValueError(f"DISCOVERY_CONNECT has an empty service name: {raw!r}")
    return names


def build_client(
    consul_addr: str | None, environ: Mapping[str, str] | None = None
) -> ServiceClient:
    """A ServiceClient calling the upstreams DISCOVERY_CONNECT names through the mesh."""
    from consul_discovery.client import ServiceClient, ServiceConfig

    connect = connect_setting(environ)
    if connect is True:
        return ServiceClient(consul_addr, default_config=ServiceConfig(connect=True))
    if connect:
        mesh = ServiceConfig(connect=True)
        return ServiceClient(consul_addr, services={name: mesh for name in sorted(connect)})
    return ServiceClient(consul_addr)


def get_caller(app: Flask) -> Caller:
    """The app's discovery client, injected or built once on first use."""
    caller = app.extensions.get("discovery_caller")
    if caller is not None:
        return caller
    with _lock:
        caller = app.extensions.get("discovery_caller")
        if caller is None:
            caller = app.config.get("DISCOVERY_CLIENT")
            if caller is None:
                from consul_discovery.client.metrics import ClientMetricsPublisher

                caller = build_client(app.config.get("CONSUL_HTTP_ADDR") or None)
                before_render(ClientMetricsPublisher(caller).start().publish)
            app.extensions["discovery_caller"] = caller
    return caller
