"""Each app's /openapi.json: valid JSON, OpenAPI 3 shaped, listing every route and method."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from services.common.openapi import openapi_path
from services.gateway.paths import MAX_PATH_LENGTH
from services.gateway.routes import resolve

APPS = ["user_app", "order_app", "gateway_app"]


@pytest.mark.parametrize("app_fixture", APPS)
def test_openapi_lists_every_route(app_fixture: str, request: pytest.FixtureRequest) -> None:
    app: Flask = request.getfixturevalue(app_fixture)
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    spec = json.loads(response.data)
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]

    expected: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path, _ = openapi_path(rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                expected.add((path, method.lower()))
    listed = {(path, method) for path, item in spec["paths"].items() for method in item}
    if app_fixture == "gateway_app":
        assert listed >= expected  # plus the public operations it relays
    else:
        assert listed == expected
    assert ("/health", "get") in listed and ("/openapi.json", "get") in listed
    _check_operations(spec)


def _check_operations(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op["summary"], (path, method)
            assert op["responses"], (path, method)
            for status, response in op["responses"].items():
                assert status == "default" or 100 <= int(status) < 600
                assert response["description"]
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(_placeholders(path)), (path, names)
            for ref in _refs(op):
                assert ref.startswith("#/components/schemas/")
                assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"]


def _placeholders(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_documented_request_bodies_match_validation(user_app: Flask, order_app: Flask) -> None:
    users = user_app.test_client().get("/openapi.json").json
    register = users["paths"]["/register"]["post"]["requestBody"]["content"]["application/json"]
    schema = register["schema"]
    assert schema["required"] == ["username", "password"]
    assert schema["properties"]["username"]["maxLength"] == 32
    assert schema["additionalProperties"] is False
    orders = order_app.test_client().get("/openapi.json").json
    create = orders["paths"]["/orders"]["post"]
    items = create["requestBody"]["content"]["application/json"]["schema"]["properties"]["items"]
    assert items["maxItems"] == 50
    assert items["items"]["properties"]["quantity"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
    }
    assert create["security"] == [{"bearerAuth": []}]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


def test_gateway_documents_the_public_operations(gateway_app: Flask) -> None:
    spec = gateway_app.test_client().get("/openapi.json").json
    public = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if path.startswith("/api/")
    }
    assert public == {
        ("/api/users/register", "post"),
        ("/api/users/login", "post"),
        ("/api/users/{user_id}", "get"),
        ("/api/orders", "post"),
        ("/api/orders", "get"),
        ("/api/orders/{order_id}", "get"),
        ("/api/stock/{sku}", "get"),  # inventory-service's (FastAPI) own operation
    }
    create = spec["paths"]["/api/orders"]["post"]
    assert create["operationId"] == "order-service.orders.create_order"
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == ["items"]
    stock = spec["paths"]["/api/stock/{sku}"]["get"]
    assert stock["operationId"].startswith("inventory-service.")
    ok = stock["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["required"] == ["sku", "available"]
    # every documented public path really routes to the upstream path it documents
    names = {
        "USER_SERVICE_NAME": "user-service",
        "ORDER_SERVICE_NAME": "order-service",
        "INVENTORY_SERVICE_NAME": "inventory-service",
    }

    def concrete(path: str) -> str:
        return path.replace("{user_id}", "7").replace("{order_id}", "7").replace("{sku}", "pen")

    for path, method in public:
        target = resolve(concrete(path), names)
        assert target is not None
        upstream = spec["paths"][path][method]["description"].split()[-1].rstrip(".")
        assert target.path == concrete(upstream)


@pytest.mark.parametrize(
    ("rule", "path", "types"),
    [
        ("/orders/<int(max=9):order_id>", "/orders/{order_id}", ["integer"]),
        ("/api/<path:rest>", "/api/{rest}", ["string"]),
        ("/users/<name>", "/users/{name}", ["string"]),
    ],
)
def test_openapi_path_conversion(rule: str, path: str, types: list[str]) -> None:
    converted, params = openapi_path(rule)
    assert converted == path
    assert [p["schema"]["type"] for p in params] == types


def test_int_converter_bounds_are_documented() -> None:
    _, params = openapi_path("/orders/<int(min=1, max=9):order_id>")
    assert params[0]["schema"] == {"type": "integer", "minimum": 1, "maximum": 9}
    _, params = openapi_path("/orders/<int:order_id>")
    assert params[0]["schema"] == {"type": "integer", "minimum": 0}  # no sign accepted


def test_inventory_service_serves_its_openapi_document(inventory_app: Any) -> None:
    from tests.services.test_inventory_service import call

    response = call(inventory_app, "GET", "/openapi.json")
    assert response.status_code == 200, response.text[:300]  # was 500: unresolvable hint
    assert response.json()["openapi"] == "3.0.3"  # as every document: 2.0 is no integer
    reserve = response.json()["paths"]["/reservations"]["post"]
    key = {p["name"]: p for p in reserve["parameters"]}["Idempotency-Key"]
    assert key["required"] is True and key["schema"]["maxLength"] == 255
    error = reserve["responses"]["422"]["content"]["application/json"]["schema"]
    assert error["required"] == ["error"]  # the platform's error shape, not FastAPI's


def test_documented_parameters_state_what_is_accepted(order_app: Flask, gateway_app: Flask) -> None:
    orders = order_app.test_client().get("/openapi.json").json["paths"]["/orders"]
    key = {p["name"]: p for p in orders["post"]["parameters"]}["Idempotency-Key"]
    assert key["schema"]["minLength"] == 1 and key["schema"]["maxLength"] == 255
    assert key["description"].startswith("Optional")
    metrics = order_app.test_client().get("/openapi.json").json["paths"]["/metrics"]["get"]
    assert "text/plain" in metrics["responses"]["200"]["content"]
    gateway = gateway_app.test_client().get("/openapi.json").json["paths"]
    sku = gateway["/api/stock/{sku}"]["get"]["parameters"][0]["schema"]
    assert sku["pattern"].startswith("^[A-Za-z0-9_~-]")  # what the path allowlist lets through
    assert len("/api/stock/") + sku["maxLength"] == MAX_PATH_LENGTH
