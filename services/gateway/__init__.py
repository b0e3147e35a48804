"""gateway: the public entry point, relaying ``/api/...`` to services through discovery.

``create_app(config)`` builds the app; configuration (defaults < environment < config):

- ``USER_SERVICE_NAME`` / ``ORDER_SERVICE_NAME`` / ``INVENTORY_SERVICE_NAME`` (same env
  names): upstream services.
- ``UPSTREAM_TIMEOUT`` (env ``GATEWAY_UPSTREAM_TIMEOUT``): read timeout per upstream
  attempt, seconds; ``CONNECT_TIMEOUT`` (env ``SERVICES_CONNECT_TIMEOUT``, 1 s) connect.
- ``DISCOVERY_CLIENT``: an object with ``request(service, method, path, **kw)``;
  default a ``discovery_client.ServiceClient`` on ``CONSUL_HTTP_ADDR``.
- ``REGISTRY_ENABLED``: False serves ``/health`` without registering in Consul.

The public routes are derived from the services' own routes (``public_routes``): the
gateway serves, documents (``/openapi.json``) and answers ``OPTIONS``/405 for exactly
what each service serves at the public path.

``/health`` has no dependency checks: the gateway is healthy while it can answer, and an
upstream outage shows as 503 answers, not as a failing gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from services.common.app import build_app
from services.common.health import init_health
from services.gateway.openapi import public_paths
from services.gateway.views import bp

__all__ = ["create_app"]

SERVICE_NAME = "gateway"
#: The config keys naming the upstream services (the route table's service_key values).
SERVICE_NAME_KEYS = ("USER_SERVICE_NAME", "ORDER_SERVICE_NAME", "INVENTORY_SERVICE_NAME")
VERSION = "1.0.0"

DEFAULTS: dict[str, Any] = {
    "SERVICE_NAME": SERVICE_NAME,
    "USER_SERVICE_NAME": "user-service",
    "ORDER_SERVICE_NAME": "order-service",
    "INVENTORY_SERVICE_NAME": "inventory-service",
    "UPSTREAM_TIMEOUT": 10.0,
    "CONSUL_HTTP_ADDR": "",
}
ENV = {
    "USER_SERVICE_NAME": "USER_SERVICE_NAME",
    "ORDER_SERVICE_NAME": "ORDER_SERVICE_NAME",
    "INVENTORY_SERVICE_NAME": "INVENTORY_SERVICE_NAME",
    "UPSTREAM_TIMEOUT": "GATEWAY_UPSTREAM_TIMEOUT",
    "CONNECT_TIMEOUT": "SERVICES_CONNECT_TIMEOUT",
    "CONSUL_HTTP_ADDR": "CONSUL_HTTP_ADDR",
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build a gateway app (see the module docstring for its configuration)."""
    app = build_app(
        __name__,
        title="gateway",
        version=VERSION,
        defaults=DEFAULTS,
        env=ENV,
        config=config,
        description=(
            "Public API: /api/users/*, /api/orders/* and /api/stock/*, relayed through discovery."
        ),
    )
    # '//' is refused by services/gateway/paths.py, not redirected to a merged path.
    app.url_map.merge_slashes = False
    app.register_blueprint(bp)
    app.extensions["openapi_extra_paths"] = lambda: public_paths(
        {key: app.config[key] for key in SERVICE_NAME_KEYS}
    )
    init_health(app, {})
    return app
