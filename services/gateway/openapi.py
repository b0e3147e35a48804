"""The public operations the gateway relays, documented from the services' own views.

The services' blueprints carry their OpenAPI metadata; mounting each on a throwaway app
(no database, no network) and mapping its paths through the route table gives the
gateway's public paths (``/api/orders/{order_id}``, ...) with the services' schemas.
Internal paths with no public route (``/tokens/verify``) are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask

from services.common.openapi import build_spec
from services.gateway.routes import public_location


def _service_blueprints() -> dict[str, Blueprint]:
    from services.order_service.views import bp as order_bp
    from services.user_service.views import bp as user_bp

    return {"USER_SERVICE_NAME": user_bp, "ORDER_SERVICE_NAME": order_bp}


def public_paths(names: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """OpenAPI path items of every public operation, keyed by public path."""
    paths: dict[str, dict[str, Any]] = {}
    for key, blueprint in _service_blueprints().items():
        doc_app = Flask(f"openapi-{blueprint.name}")
        doc_app.register_blueprint(blueprint)
        spec = build_spec(doc_app, blueprint.name, "0")
        service = names[key]
        for path, item in spec["paths"].items():
            public = public_location(service, path, names)
            if not public.startswith("/api/"):
                continue
            for method, op in item.items():
                relayed = dict(op, operationId=f"{service}.{op['operationId']}")
                relayed["description"] = f"Relayed to {service} {method.upper()} {path}."
                paths.setdefault(public, {})[method] = relayed
    return paths
