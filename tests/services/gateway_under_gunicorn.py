"""A gateway app factory for tests under a real gunicorn: upstreams from the environment.

``GATEWAY_TEST_USER_PORT`` / ``GATEWAY_TEST_ORDER_PORT`` name loopback ports of
user-service / order-service instances; a real ServiceClient reaches them through a
static source (no Consul needed to test what gunicorn passes to the gateway).
"""

from __future__ import annotations

import os

from flask import Flask

from consul_discovery.client import ServiceClient
from services.gateway import create_app
from tests.services.fakes import StaticSource


def create() -> Flask:
    """The gateway, relaying to the instances named in the environment."""
    source = StaticSource(
        {
            "user-service": [("127.0.0.1", int(os.environ["GATEWAY_TEST_USER_PORT"]))],
            "order-service": [("127.0.0.1", int(os.environ["GATEWAY_TEST_ORDER_PORT"]))],
        }
    )
    client = ServiceClient(source=source, resolve_timeout=1.0)
    return create_app({"REGISTRY_ENABLED": False, "DISCOVERY_CLIENT": client})
