"""The gateway's one public route: everything under ``/api/``, relayed by the route table."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from services.common.errors import ApiError
from services.common.metrics import label_route
from services.common.openapi import operation
from services.gateway.paths import SEGMENT_SCHEMA, check_public_path
from services.gateway.proxy import forward
from services.gateway.routes import ROUTES, resolve

bp = Blueprint("gateway", __name__)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def service_names() -> dict[str, str]:
    """Route table service keys -> the service names configured for this app."""
    return {route.service_key: current_app.config[route.service_key] for route in ROUTES}


@bp.route("/api/<path:rest>", methods=METHODS)
@operation(
    "Relay to user-service, order-service or inventory-service (see the route table)",
    description=(
        "POST /api/users/register, POST /api/users/login, GET /api/users/{id} go to "
        "user-service; POST /api/orders, GET /api/orders, GET /api/orders/{id} go to "
        "order-service; GET /api/stock/{sku} goes to inventory-service. Upstream status, "
        "body and content type are relayed unchanged; Authorization is passed on; "
        "Idempotency-Key only to the order routes. See each service's /openapi.json. "
        "Any path of plain segments is relayed; the document shows one."
    ),
    path={"rest": SEGMENT_SCHEMA},
    responses={
        200: "Upstream answer",
        400: "Invalid path (dot segments, percent-encoding, empty segments, ...)",
        404: "No route (or upstream 404)",
        413: "Body too large",
        502: "Every attempt to reach the service failed",
        503: "No healthy instance of the service",
    },
)
def relay(rest: str) -> Response:
    """Route ``/api/<rest>`` to its service and relay the answer."""
    check_public_path(request.path, request.environ)  # before any routing
    names = service_names()
    target = resolve("/api/" + rest, names)
    if target is None:
        raise ApiError(404, "no_route", f"no service serves /api/{rest}")
    label_route(target.route)  # per public route in the RED series, not one catch-all
    return forward(target, names)
