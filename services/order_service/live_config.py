"""order-service's live settings from Consul KV (``consul_discovery.config``) in app.config.

==========================  =================  ===========================================
setting (KV key under        app.config key     effect
``config/order-service/``)
==========================  =================  ===========================================
``orders.max_items``         MAX_ORDER_ITEMS    most items one order may hold (1-50)
``orders.max_list_limit``    MAX_LIST_LIMIT     largest ``limit`` of GET /orders (1-500)
==========================  =================  ===========================================

Both take effect on the next request after a KV write (each gunicorn worker runs its own
watch); deleting a key restores the app's own value. ``CONFIG_ENABLED`` (default: the
same as ``REGISTRY_ENABLED``) turns it off, ``CONFIG_CLIENT`` injects a client, and env
``CONFIG_PROFILES`` (comma-separated) adds profile layers.
"""

from __future__ import annotations

import os

from flask import Flask

from consul_discovery.config import ConfigClient, Layers, Schema, Setting, between
from consul_discovery.config.flask import ConsulConfig
from consul_discovery.connection import ConsulConnection

SCHEMA = Schema(
    Setting("orders.max_items", int, validate=between(1, 50), doc="items per order"),
    Setting("orders.max_list_limit", int, validate=between(1, 500), doc="GET /orders limit"),
)
BIND = {"orders.max_items": "MAX_ORDER_ITEMS", "orders.max_list_limit": "MAX_LIST_LIMIT"}


def init_live_config(app: Flask, service: str) -> None:
    """Keep MAX_ORDER_ITEMS and MAX_LIST_LIMIT current from Consul KV (unless disabled)."""
    enabled = app.config.get("CONFIG_ENABLED")
    if not (app.config["REGISTRY_ENABLED"] if enabled is None else enabled):
        return
    client = app.config.get("CONFIG_CLIENT")
    if client is None:
        profiles = tuple(p for p in os.environ.get("CONFIG_PROFILES", "").split(",") if p)
        connection = ConsulConnection.from_env(address=app.config["CONSUL_HTTP_ADDR"] or None)
        client = ConfigClient(Layers(service, profiles), connection=connection, schema=SCHEMA)
    ConsulConfig(app, client, bind=BIND)
