"""The gateway's public routes, derived from the services' own route definitions.

One source of truth: each service's routes as its code defines them (the Flask
blueprints of user- and order-service, the FastAPI routes of inventory-service, read
from throwaway apps built without I/O), mapped to public paths by the route table
(``routes.ROUTES``). An upstream route whose public path is under ``/api/`` is public,
with exactly the methods its service serves there and the service's own OpenAPI
operations. The gateway registers one Flask rule per public route, so Flask's routing
answers 404, 405 (with ``Allow``) and ``OPTIONS`` from them, and documents the same
routes in its OpenAPI document (``openapi.py``): what it serves and what it documents
cannot drift apart, nor from the services. Internal routes (``/tokens/verify``,
``/reservations``) have no public path and stay out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask

from services.common.openapi import build_spec, openapi_path
from services.gateway.routes import ROUTES, Route, resolve

#: Methods every rule gets from its framework (Flask adds them itself; not documented).
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
_STARLETTE_PARAM = re.compile(r"{(?P<name>\w+)(?::(?P<conv>\w+))?}")
#: Starlette's path convertors as werkzeug converters (``str`` is werkzeug's default).
_CONVERTERS = {None: "", "str": "", "int": "int:", "path": "path:"}


@dataclass(frozen=True, slots=True)
class UpstreamRoute:
    """One route a service serves: its Flask-style rule, methods and OpenAPI operations."""

    rule: str  # e.g. "/orders/<int(max=9223372036854775807):order_id>"
    methods: frozenset[str]  # GET, POST, ...: never HEAD or OPTIONS
    operations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by method


@dataclass(frozen=True, slots=True)
class PublicRoute:
    """A route the gateway serves: its public rule and what it relays to."""

    rule: str  # the gateway's Flask rule, e.g. "/api/orders/<int(max=...):order_id>"
    service_key: str  # the config key naming the service, e.g. "ORDER_SERVICE_NAME"
    upstream: UpstreamRoute

    @property
    def methods(self) -> frozenset[str]:
        """The methods the service serves at this route."""
        return self.upstream.methods


def flask_routes(blueprint: Blueprint) -> tuple[UpstreamRoute, ...]:
    """The routes of a Flask service's blueprint, with the OpenAPI operations it documents."""
    app = Flask(f"routes-{blueprint.name}")
    app.register_blueprint(blueprint)
    spec = build_spec(app, blueprint.name, "0")
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = frozenset(rule.methods or ()) - IMPLICIT_METHODS
        item = spec["paths"][openapi_path(rule.rule)[0]]
        found.append(UpstreamRoute(rule.rule, methods, {m: item[m.lower()] for m in methods}))
    return tuple(found)


def asgi_routes(install: Callable[[Any], None]) -> tuple[UpstreamRoute, ...]:
    """The routes ``install(app)`` adds to a FastAPI app, with their OpenAPI operations."""
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

    app = FastAPI()
    install(app)
    spec = app.openapi()
    found = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        rule = _STARLETTE_PARAM.sub(lambda m: f"<{_CONVERTERS[m['conv']]}{m['name']}>", route.path)
        methods = frozenset(route.methods) - IMPLICIT_METHODS
        item = spec["paths"][route.path_format]  # the document drops the convertors
        found.append(UpstreamRoute(rule, methods, {m: item[m.lower()] for m in methods}))
    return tuple(found)


def _service_routes() -> Iterator[tuple[str, tuple[UpstreamRoute, ...]]]:
    from services.inventory_service.views import install as install_inventory
    from services.order_service.views import bp as order_bp
    from services.user_service.views import bp as user_bp

    yield "USER_SERVICE_NAME", flask_routes(user_bp)
    yield "ORDER_SERVICE_NAME", flask_routes(order_bp)
    yield "INVENTORY_SERVICE_NAME", asgi_routes(install_inventory)


def public_rule(
    service_key: str, upstream_rule: str, routes: tuple[Route, ...] = ROUTES
) -> str | None:
    """The public rule the route table gives ``service_key``'s ``upstream_rule``, or None."""
    for route in sorted(routes, key=lambda r: len(r.upstream_prefix), reverse=True):
        up = route.upstream_prefix
        if route.service_key == service_key and (
            upstream_rule == up or upstream_rule.startswith(up + "/")
        ):
            return route.prefix + upstream_rule[len(up) :]
    return None


def derive(
    services: Iterator[tuple[str, tuple[UpstreamRoute, ...]]], routes: tuple[Route, ...] = ROUTES
) -> tuple[PublicRoute, ...]:
    """The public routes of ``services`` (service key -> its routes) under ``routes``.

    Raises RuntimeError when the table would route a public path elsewhere than the
    upstream route it was derived from (two prefixes overlapping the wrong way).
    """
    keys = {route.service_key: route.service_key for route in routes}
    public = []
    for key, upstream_routes in services:
        for upstream in upstream_routes:
            rule = public_rule(key, upstream.rule, routes)
            if rule is None or not rule.startswith("/api/"):
                continue  # internal: no public route
            target = resolve(rule, keys, routes)
            if target is None or (target.service, target.path) != (key, upstream.rule):
                raise RuntimeError(
                    f"route table conflict: {rule} is derived from {key} {upstream.rule} "
                    f"but routes to {target}"
                )
            public.append(PublicRoute(rule, key, upstream))
    return tuple(sorted(public, key=lambda r: r.rule))


@functools.cache
def public_routes() -> tuple[PublicRoute, ...]:
    """Every route the gateway serves, derived once from the services' own routes."""
    return derive(_service_routes())
