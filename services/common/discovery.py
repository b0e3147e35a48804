"""The discovery client a service calls other services through.

Tests inject any object with ``request(service, method, path, **kwargs)`` as
``config["DISCOVERY_CLIENT"]``. Otherwise a ``discovery_client.ServiceClient`` is built
on first use (so under gunicorn each worker builds its own after the fork, and its
watch threads live in that worker) against ``CONSUL_HTTP_ADDR``, and its counts are
published to the service's ``/metrics`` (``consul_discovery.client.metrics``).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import requests
from flask import Flask

from services.common.metrics import before_render


class Caller(Protocol):
    """What services need from a discovery client: call a service by name."""

    def request(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request to some healthy instance of ``service``."""
        ...


_lock = threading.Lock()


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
                from consul_discovery.client import ServiceClient
                from consul_discovery.client.metrics import ClientMetricsPublisher

                caller = ServiceClient(app.config.get("CONSUL_HTTP_ADDR") or None)
                before_render(ClientMetricsPublisher(caller).start().publish)
            app.extensions["discovery_caller"] = caller
    return caller
