"""The gateway's public routes: one Flask rule per route a service serves publicly.

The rules come from ``public_routes`` (the services' own routes through the route
table), each with exactly the methods its service serves there. So Flask's routing
answers what is not served: 404 for a path no service serves publicly, 405 with
``Allow`` for a method the service does not serve, and ``OPTIONS`` with the same
``Allow``; none of them reaches a service. Every path under ``/api/`` is checked
against the allowlist (``paths``) first, so a path trick is 400 whatever it matches.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from services.common.errors import ApiError
from services.common.metrics import label_route
from services.gateway.paths import check_public_path
from services.gateway.proxy import forward
from services.gateway.public_routes import public_routes
from services.gateway.routes import ROUTES, resolve

bp = Blueprint("gateway", __name__)

PUBLIC_PREFIX = "/api"


def service_names() -> dict[str, str]:
    """Route table service keys -> the service names configured for this app."""
    return {route.service_key: current_app.config[route.service_key] for route in ROUTES}


@bp.before_app_request
def _plain_public_paths() -> None:
    """Refuse a path trick under ``/api/`` (400) before routing answers anything."""
    path = request.path
    if path != PUBLIC_PREFIX and not path.startswith(PUBLIC_PREFIX + "/"):
        return
    check_public_path(path, request.environ)
    target = resolve(path, service_names())
    if request.url_rule is not None and target is not None:
        label_route(target.route)  # per public route in the RED series, OPTIONS too


def relay(**_path_params: object) -> Response:
    """Relay the current request to the service its public route names."""
    names = service_names()
    target = resolve(request.path, names)
    if target is None:  # cannot happen: every rule is derived through the table
        raise ApiError(404, "no_route", f"no service serves {request.path}")
    return forward(target, names)


for _number, _route in enumerate(public_routes()):
    bp.add_url_rule(_route.rule, f"relay_{_number}", relay, methods=sorted(_route.methods))
