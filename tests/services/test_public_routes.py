"""The gateway's public routes are derived from the services' routes through the route table."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from services.gateway.public_routes import (
    UpstreamRoute,
    asgi_routes,
    derive,
    flask_routes,
    public_routes,
    public_rule,
)
from services.gateway.routes import ROUTES, Route
from services.order_service.views import bp as order_bp
from services.user_service.views import bp as user_bp


def test_the_public_routes_are_the_services_public_ones() -> None:
    found = {
        (r.rule, r.service_key, r.upstream.rule, m) for r in public_routes() for m in r.methods
    }
    assert found == {
        ("/api/users/register", "USER_SERVICE_NAME", "/register", "POST"),
        ("/api/users/login", "USER_SERVICE_NAME", "/login", "POST"),
        (
            "/api/users/<int(max=9223372036854775807):user_id>",
            "USER_SERVICE_NAME",
            "/users/<int(max=9223372036854775807):user_id>",
            "GET",
        ),
        ("/api/orders", "ORDER_SERVICE_NAME", "/orders", "POST"),
        ("/api/orders", "ORDER_SERVICE_NAME", "/orders", "GET"),
        (
            "/api/orders/<int(max=9223372036854775807):order_id>",
            "ORDER_SERVICE_NAME",
            "/orders/<int(max=9223372036854775807):order_id>",
            "GET",
        ),
        ("/api/stock/<sku>", "INVENTORY_SERVICE_NAME", "/stock/<sku>", "GET"),
    }  # and not /tokens/verify nor /reservations: internal


def test_each_upstream_route_carries_its_own_documented_operation() -> None:
    users = {route.rule: route for route in flask_routes(user_bp)}
    assert users["/register"].methods == {"POST"}
    assert users["/register"].operations["POST"]["operationId"] == "users.register"
    assert "/tokens/verify" in users  # read, then left out of the public routes
    orders = [route for route in flask_routes(order_bp) if route.rule == "/orders"]
    assert {m for route in orders for m in route.methods} == {"GET", "POST"}

    def install(app: FastAPI) -> None:
        @app.get("/things/{name}")
        def thing(name: str) -> dict[str, str]:
            return {"name": name}

        @app.put("/things/{number:int}/parts/{rest:path}")
        def part(number: int, rest: str) -> dict[str, str]:
            return {}

    rules = {route.rule: route.methods for route in asgi_routes(install)}
    assert rules == {"/things/<name>": {"GET"}, "/things/<int:number>/parts/<path:rest>": {"PUT"}}


def test_public_rules_follow_the_route_table() -> None:
    assert public_rule("USER_SERVICE_NAME", "/register") == "/api/users/register"
    assert public_rule("USER_SERVICE_NAME", "/users/<int:id>") == "/api/users/<int:id>"
    assert public_rule("USER_SERVICE_NAME", "/tokens/verify") is None
    assert public_rule("INVENTORY_SERVICE_NAME", "/reservations") is None
    assert public_rule("ORDER_SERVICE_NAME", "/ordersx") is None  # whole segments only


def test_a_table_routing_a_derived_path_elsewhere_is_refused() -> None:
    # user-service's /users/register would be public at /api/users/register, which the
    # table sends to /register instead: serving it would relay to the wrong route.
    services = iter(
        [("USER_SERVICE_NAME", (UpstreamRoute("/users/register", frozenset({"GET"})),))]
    )
    with pytest.raises(RuntimeError, match="route table conflict: /api/users/register"):
        derive(services, ROUTES)


def test_a_service_without_a_public_prefix_has_no_public_route() -> None:
    table = (Route("/api/users", "USER_SERVICE_NAME", "/users"),)
    services = iter(
        [
            ("USER_SERVICE_NAME", (UpstreamRoute("/users/<int:id>", frozenset({"GET"})),)),
            ("ORDER_SERVICE_NAME", (UpstreamRoute("/orders", frozenset({"GET"})),)),
        ]
    )
    assert [route.rule for route in derive(services, table)] == ["/api/users/<int:id>"]
