"""order-service: orders created idempotently for users verified by user-service.

``create_app(config)`` builds the app; configuration (defaults < environment < config):

- ``ORDER_DB_PATH`` (env ``ORDER_DB_PATH``): the SQLite file every instance shares.
- ``USER_SERVICE_NAME`` (env ``USER_SERVICE_NAME``): whom to ask about tokens.
- ``USER_SERVICE_TIMEOUT`` (env ``USER_SERVICE_TIMEOUT``): read timeout of a token
  check, seconds; ``CONNECT_TIMEOUT`` (env ``SERVICES_CONNECT_TIMEOUT``, 1 s) connect.
- ``INVENTORY_SERVICE_NAME`` (env): where an order's items are reserved before the
  order is stored (idempotently per order key, ``services.order_service.inventory``);
  empty reserves nothing. ``INVENTORY_SERVICE_TIMEOUT`` (env): its read timeout.
- ``DISCOVERY_CLIENT``: an object with ``request(service, method, path, **kw)``;
  default a ``discovery_client.ServiceClient`` on ``CONSUL_HTTP_ADDR``.
- ``REGISTRY_ENABLED``: False serves ``/health`` without registering in Consul.
- ``MAX_ORDER_ITEMS`` / ``MAX_LIST_LIMIT``: live from Consul KV (``live_config``).

``/health`` checks only this service's own database: a user-service outage makes
order calls fail with 503, not order-service instances leave the pool (inventory-service
likewise).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from services.common.app import build_app
from services.common.db import Database, init_db
from services.common.health import init_health
from services.order_service import store
from services.order_service.live_config import init_live_config
from services.order_service.views import bp

__all__ = ["create_app"]

SERVICE_NAME = "order-service"
VERSION = "1.0.0"

DEFAULTS: dict[str, Any] = {
    "SERVICE_NAME": SERVICE_NAME,
    "ORDER_DB_PATH": "",
    "USER_SERVICE_NAME": "user-service",
    "USER_SERVICE_TIMEOUT": 5.0,
    "INVENTORY_SERVICE_NAME": "inventory-service",
    "INVENTORY_SERVICE_TIMEOUT": 5.0,
    "CONSUL_HTTP_ADDR": "",
    "MAX_LIST_LIMIT": 500,
    "MAX_ORDER_ITEMS": 50,
    "CONFIG_ENABLED": None,
}
ENV = {
    "ORDER_DB_PATH": "ORDER_DB_PATH",
    "USER_SERVICE_NAME": "USER_SERVICE_NAME",
    "USER_SERVICE_TIMEOUT": "USER_SERVICE_TIMEOUT",
    "INVENTORY_SERVICE_NAME": "INVENTORY_SERVICE_NAME",
    "INVENTORY_SERVICE_TIMEOUT": "INVENTORY_SERVICE_TIMEOUT",
    "CONNECT_TIMEOUT": "SERVICES_CONNECT_TIMEOUT",
    "CONSUL_HTTP_ADDR": "CONSUL_HTTP_ADDR",
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build an order-service app (see the module docstring for its configuration)."""
    app = build_app(
        __name__,
        title="order-service",
        version=VERSION,
        defaults=DEFAULTS,
        env=ENV,
        config=config,
        description="Orders, created idempotently, readable by their owner only.",
    )
    db_path = app.config["ORDER_DB_PATH"] or os.path.join(app.instance_path, "orders.sqlite3")
    database = Database(db_path, store.SCHEMA, int(app.config["DB_BUSY_TIMEOUT_MS"]))
    init_db(app, database)
    app.register_blueprint(bp)
    init_health(app, {"database": database.check})
    init_live_config(app, SERVICE_NAME)
    return app
