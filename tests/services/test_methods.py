"""OPTIONS and Allow list exactly what each route serves, on every service and the gateway.

For every route of every service, OPTIONS answers 200 with ``Allow`` naming the methods
served at that path (HEAD wherever GET is, and OPTIONS), and every other method answers
the JSON 405 with the same ``Allow``. The expected sets are read from each app's own
route definitions. The gateway's ``Allow`` at a public path must be what its upstream
answers at the upstream path (asked of the upstream app itself), and neither its OPTIONS
nor its 405 reaches the upstream.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest
from flask import Flask

from services.gateway.routes import resolve
from tests.services.conftest import assert_json_error
from tests.services.fakes import FlaskCaller
from tests.services.test_inventory_service import call

#: Methods tried on every path; each one not served must be a 405.
PROBED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE", "QUERY")
_FLASK_PARAM = re.compile(r"<(?:(?P<conv>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_ASGI_PARAM = re.compile(r"{\w+(?::\w+)?}")
NAMES = {
    "USER_SERVICE_NAME": "user-service",
    "ORDER_SERVICE_NAME": "order-service",
    "INVENTORY_SERVICE_NAME": "inventory-service",
}


def _sample(match: re.Match[str]) -> str:
    return "7" if match["conv"] == "int" else "pen"


def _with_implicit(methods: set[str]) -> set[str]:
    return methods | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())


def flask_paths(app: Flask) -> dict[str, set[str]]:
    """A concrete path per rule of ``app`` -> the methods its rules there declare."""
    served: dict[str, set[str]] = defaultdict(set)
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static":
            served[_FLASK_PARAM.sub(_sample, rule.rule)] |= set(rule.methods or ())
    return {path: _with_implicit(methods) for path, methods in served.items()}


def asgi_paths(app: Any) -> dict[str, set[str]]:
    """A concrete path per route of a FastAPI app -> the methods its routes there declare."""
    served: dict[str, set[str]] = defaultdict(set)
    for route in app.routes:
        if getattr(route, "methods", None):
            served[_ASGI_PARAM.sub("pen", route.path)] |= set(route.methods)
    return {path: _with_implicit(methods) for path, methods in served.items()}


def _allow(response: Any) -> set[str]:
    return {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}


def _assert_405(response: Any, method: str) -> None:
    """A JSON 405 (a HEAD answer has the headers of one, and no body)."""
    if method != "HEAD":
        assert_json_error(response, 405, "method_not_allowed")
    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("name", ["user", "order", "gateway"])
def test_every_flask_route_answers_options_and_405_with_what_it_serves(
    name: str, user_app: Flask, order_app: Flask, gateway_app: Flask
) -> None:
    app = {"user": user_app, "order": order_app, "gateway": gateway_app}[name]
    client = app.test_client()
    paths = flask_paths(app)
    assert len(paths) >= 4, paths
    for path, expected in paths.items():
        options = client.options(path)
        assert options.status_code == 200, (path, options.data[:200])
        assert _allow(options) == expected, path
        for method in set(PROBED) - expected:
            response = client.open(path, method=method)
            _assert_405(response, method)
            assert _allow(response) == expected, (path, method)


def test_every_inventory_route_answers_options_and_405_with_what_it_serves(
    inventory_app: Any,
) -> None:
    paths = asgi_paths(inventory_app)
    assert {"/stock/pen", "/reservations", "/health", "/metrics"} <= set(paths), paths
    for path, expected in paths.items():
        options = call(inventory_app, "OPTIONS", path)
        assert options.status_code == 200, (path, options.text[:200])
        assert _allow(options) == expected, path
        assert options.content == b""
        for method in set(PROBED) - expected:
            response = call(inventory_app, method, path)
            assert response.status_code == 405, (path, method, response.text[:200])
            assert response.headers["content-type"] == "application/json"
            if method != "HEAD":
                assert response.json()["error"]["code"] == "method_not_allowed"
            assert _allow(response) == expected, (path, method)
    head = call(inventory_app, "HEAD", "/stock/pen")  # HEAD wherever GET is, as Flask does
    assert head.status_code == 200 and head.content == b""
    assert call(inventory_app, "OPTIONS", "/nowhere").status_code == 404


#: The public paths and what their services serve (a hand check of the derivation).
PUBLIC = {
    "/api/users/register": {"POST", "OPTIONS"},
    "/api/users/login": {"POST", "OPTIONS"},
    "/api/users/7": {"GET", "HEAD", "OPTIONS"},
    "/api/orders": {"GET", "HEAD", "OPTIONS", "POST"},
    "/api/orders/7": {"GET", "HEAD", "OPTIONS"},
    "/api/stock/pen": {"GET", "HEAD", "OPTIONS"},
}


def _upstream_allow(caller: FlaskCaller, service: str, path: str) -> set[str]:
    app = caller.apps[service]
    if isinstance(app, Flask):
        return _allow(app.test_client().options(path))
    return _allow(call(app, "OPTIONS", path))


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_the_gateway_allows_what_the_upstream_route_serves(
    path: str, gateway_app: Flask, caller: FlaskCaller
) -> None:
    target = resolve(path, NAMES)
    assert target is not None
    upstream = _upstream_allow(caller, target.service, target.path)
    assert upstream == PUBLIC[path], (target, upstream)
    caller.calls.clear()
    client = gateway_app.test_client()
    options = client.options(path)
    assert options.status_code == 200 and _allow(options) == upstream
    for method in set(PROBED) - upstream:
        response = client.open(path, method=method)
        _assert_405(response, method)
        assert _allow(response) == upstream, method
    assert caller.calls == []  # answered at the gateway, from the derived routes


def test_the_gateway_serves_no_other_public_path(gateway_app: Flask, caller: FlaskCaller) -> None:
    client = gateway_app.test_client()
    for path in ("/api/users/tokens/verify", "/api/reservations", "/api/users/abc", "/api/x"):
        assert_json_error(client.options(path), 404, "not_found")
        assert_json_error(client.get(path), 404, "not_found")
    assert caller.calls == []
