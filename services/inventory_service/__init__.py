"""inventory-service: stock reserved idempotently per order, a FastAPI app under uvicorn.

order-service reserves an order's items here before it stores the order, with an
``Idempotency-Key`` derived from the order's own key, so a retried order (or a retried
reservation, on another instance) takes stock once.

``create_app(config)`` builds the app; configuration (defaults < environment < config):

- ``INVENTORY_DB_PATH`` (env): the SQLite file every instance shares.
- ``INVENTORY_INITIAL_STOCK`` (env): stock of a SKU seen for the first time (1,000,000).
- ``MAX_CONTENT_LENGTH`` (env ``SERVICES_MAX_CONTENT_LENGTH``, as every service): body
  limit in bytes (65536); larger is 413.
- ``REGISTRY_ENABLED`` (env): False serves ``/health`` without ever registering.

Serve it with uvicorn (registers, drains on SIGTERM through ``consul_discovery.registry.asgi``)::

    SERVICE_NAME=inventory-service uvicorn --factory services.inventory_service:create_app \
        --http services.common.server_errors:JsonErrorH11Protocol  # its own 400s in JSON too

or with gunicorn and uvicorn workers (the master registers once)::

    gunicorn -c python:services.common.gunicorn_conf -k uvicorn_worker.UvicornWorker \\
        "services.inventory_service:create_app()"
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from consul_discovery.registry.asgi import ConsulRegistry
from consul_discovery.registry.health import HealthChecks
from services.common.app import COMMON_DEFAULTS, env_flag, init_logging
from services.common.asgi import ObservedApp
from services.common.asgi_http import init_http
from services.common.db import Database
from services.common.metrics import METRICS_PATH, render
from services.inventory_service import store
from services.inventory_service.views import install

__all__ = ["create_app"]

SERVICE_NAME = "inventory-service"
VERSION = "1.0.0"
OPENAPI_VERSION = "3.0.3"

DEFAULTS: dict[str, Any] = {
    "INVENTORY_DB_PATH": "",
    "INVENTORY_INITIAL_STOCK": 1_000_000,
    "REGISTRY_ENABLED": True,
    "DB_BUSY_TIMEOUT_MS": 5000,
    "MAX_CONTENT_LENGTH": COMMON_DEFAULTS["MAX_CONTENT_LENGTH"],
}
#: Config key -> the environment variable it is read from.
ENV = {
    "INVENTORY_DB_PATH": "INVENTORY_DB_PATH",
    "INVENTORY_INITIAL_STOCK": "INVENTORY_INITIAL_STOCK",
    "REGISTRY_ENABLED": "REGISTRY_ENABLED",
    "MAX_CONTENT_LENGTH": "SERVICES_MAX_CONTENT_LENGTH",
}


def _config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = dict(DEFAULTS)
    for key, var in ENV.items():
        raw = os.environ.get(var, "").strip()
        if not raw:
            continue
        if key == "REGISTRY_ENABLED":
            settings[key] = env_flag(raw)
        elif key in ("INVENTORY_INITIAL_STOCK", "MAX_CONTENT_LENGTH"):
            if not raw.isdigit():
                raise ValueError(f"{var} must be a whole number; got {raw!r}")
            settings[key] = int(raw)
        else:
            settings[key] = raw
    settings.update(config or {})
    return settings


def create_app(config: Mapping[str, Any] | None = None) -> FastAPI:
    """Build an inventory-service app (see the module docstring for its configuration)."""
    settings = _config(config)
    init_logging()  # the access log's lines, as the Flask services print theirs
    db_path = settings["INVENTORY_DB_PATH"] or os.path.join(
        tempfile.gettempdir(), "inventory.sqlite3"
    )
    database = Database(db_path, store.SCHEMA, int(settings["DB_BUSY_TIMEOUT_MS"]))
    database.create_schema()
    app = FastAPI(
        title="inventory-service",
        version=VERSION,
        description="Stock, reserved idempotently per order key.",
    )
    # As every document of the platform (the gateway embeds its operations): JSON
    # Schema's draft 4 types, where an integer has no fraction (2.0 is not one), as the
    # strict models validate. FastAPI's default, 3.1, would call 2.0 an integer.
    app.openapi_version = OPENAPI_VERSION
    app.state.settings = settings
    app.state.database = database
    init_http(app, max_body=int(settings["MAX_CONTENT_LENGTH"]))
    # Added last, so outermost: its metrics and access log see every answer, 413 included.
    app.add_middleware(ObservedApp, service=SERVICE_NAME)  # metrics, trace, access log
    install(app)
    _metrics_route(app)
    if settings["REGISTRY_ENABLED"]:
        registry = ConsulRegistry()
        registry.add_check("database", database.check)
        registry.init_app(app)
    else:
        _local_health(app, database)
    return app


def _metrics_route(app: FastAPI) -> None:
    """``GET /metrics`` as a route, so routing, ``Allow`` and the OpenAPI document know it
    (ObservedApp answers the GETs themselves before routing)."""

    @app.get(
        METRICS_PATH,
        response_class=Response,
        summary="Prometheus metrics of this instance (text exposition format)",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)


def _local_health(app: FastAPI, database: Database) -> None:
    checks = HealthChecks()
    checks.add("database", database.check)

    @app.get("/health")
    def health() -> JSONResponse:
        report = checks.evaluate()
        return JSONResponse(report.to_json(), status_code=200 if report.passing else 503)
