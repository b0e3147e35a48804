"""Bad input for every endpoint of every service, directly and through the gateway.

Whatever the input, the answer is a 4xx with a JSON error body of the shared shape,
never a 500, and field errors name the field. The per-field cases are generated from
the same ``Field`` schemas the views validate with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.common.validation import Field, Schema
from services.order_service.views import NEW_ORDER
from services.user_service.views import CREDENTIALS, LOGIN, TOKEN_BODY
from tests.services.conftest import assert_json_error, auth

VALID_ITEMS = [{"sku": "book", "quantity": 2}]


@dataclass(frozen=True)
class Endpoint:
    """A JSON-body endpoint: where it is directly and through the gateway."""

    name: str
    service: str
    path: str
    gateway_path: str
    schema: Schema
    valid: dict[str, Any]
    needs_token: bool = False


ENDPOINTS = (
    Endpoint(
        "register",
        "user",
        "/register",
        "/api/users/register",
        CREDENTIALS,
        {"username": "newuser", "password": "password123"},
    ),
    Endpoint(
        "login",
        "user",
        "/login",
        "/api/users/login",
        LOGIN,
        {"username": "someone", "password": "password123"},
    ),
    Endpoint("verify", "user", "/tokens/verify", "", TOKEN_BODY, {"token": "TOKEN"}),
    Endpoint(
        "create_order",
        "order",
        "/orders",
        "/api/orders",
        NEW_ORDER,
        {"items": VALID_ITEMS},
        needs_token=True,
    ),
)

_WRONG_TYPES: dict[type, list[Any]] = {
    str: [123, 1.5, True, ["a"], {"a": 1}],
    int: ["1", 1.5, True, [1], {"a": 1}],
    list: ["a", 1, {"a": 1}, True],
    dict: ["a", 1, [1], True],
    bool: ["true", 1, [True]],
}


def _field_cases(schema: Schema, valid: dict[str, Any]) -> Iterator[tuple[str, dict, str]]:
    """(case id, body, field the error must name) for every way each field can be wrong."""
    for spec in schema:
        without = {k: v for k, v in valid.items() if k != spec.name}
        if spec.required:
            yield f"{spec.name}-missing", without, spec.name
            yield f"{spec.name}-null", {**without, spec.name: None}, spec.name
        for i, wrong in enumerate(_WRONG_TYPES[spec.kind]):
            yield f"{spec.name}-type{i}", {**valid, spec.name: wrong}, spec.name
        yield from _limit_cases(spec, valid)
    yield "unknown-field", {**valid, "surprise": 1}, "surprise"


def _limit_cases(spec: Field, valid: dict[str, Any]) -> Iterator[tuple[str, dict, str]]:
    name = spec.name
    if spec.kind is str:
        if spec.max_length is not None:
            yield f"{name}-too-long", {**valid, name: "a" * (spec.max_length + 1)}, name
        if spec.min_length:
            yield f"{name}-too-short", {**valid, name: "a" * (spec.min_length - 1)}, name
        if spec.pattern is not None:
            yield f"{name}-bad-chars", {**valid, name: "bad name!"}, name
    if spec.kind is int:
        if spec.minimum is not None:
            yield f"{name}-below-min", {**valid, name: spec.minimum - 1}, name
        if spec.maximum is not None:
            yield f"{name}-above-max", {**valid, name: spec.maximum + 1}, name
        yield f"{name}-huge", {**valid, name: 10**30}, name
    if spec.kind is list:
        item = valid[name][0]
        if spec.min_length:
            yield f"{name}-empty", {**valid, name: []}, name
        if spec.max_length is not None:
            yield f"{name}-too-many", {**valid, name: [item] * (spec.max_length + 1)}, name
        if spec.items is not None:
            yield f"{name}-item-not-object", {**valid, name: ["x"]}, f"{name}[0]"
            for case, bad_item, field in _field_cases(spec.items, item):
                yield f"{name}-item-{case}", {**valid, name: [bad_item]}, f"{name}[0].{field}"


RAW_BODIES: list[tuple[str, bytes, str | None, int]] = [
    ("truncated", b'{"username": ', "application/json", 400),
    ("not-json", b"{bad", "application/json", 400),
    ("empty", b"", "application/json", 400),
    ("not-utf8", b"\xff\xfe\x00", "application/json", 400),
    ("deep-nesting", b"[" * 30000 + b"]" * 30000, "application/json", 400),
    ("array", b"[]", "application/json", 400),
    ("null", b"null", "application/json", 400),
    ("string", b'"text"', "application/json", 400),
    ("number", b"42", "application/json", 400),
    ("text-plain", b'{"a": 1}', "text/plain", 415),
    ("form", b"a=1", "application/x-www-form-urlencoded", 415),
    ("no-content-type", b'{"a": 1}', None, 415),
    ("too-large", b'{"a": "' + b"x" * 70_000 + b'"}', "application/json", 413),
]

BODY_CASES = [
    pytest.param(ep, case, body, field, id=f"{ep.name}-{case}")
    for ep in ENDPOINTS
    for case, body, field in _field_cases(ep.schema, ep.valid)
]
RAW_CASES = [
    pytest.param(ep, raw, ctype, status, id=f"{ep.name}-{case}")
    for ep in ENDPOINTS
    for case, raw, ctype, status in RAW_BODIES
]


@pytest.fixture
def stack(user_app: Flask, order_app: Flask, gateway_app: Flask, login: Any) -> dict[str, Any]:
    """Every app plus a valid token."""
    _, token = login("someone")
    return {"user": user_app, "order": order_app, "gateway": gateway_app, "token": token}


def _targets(stack: dict[str, Any], ep: Endpoint) -> list[tuple[FlaskClient, str]]:
    targets = [(stack[ep.service].test_client(), ep.path)]
    if ep.gateway_path:
        targets.append((stack["gateway"].test_client(), ep.gateway_path))
    return targets


def _headers(stack: dict[str, Any], ep: Endpoint) -> dict[str, str]:
    return auth(stack["token"]) if ep.needs_token else {}


def _fill(stack: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {k: (stack["token"] if v == "TOKEN" else v) for k, v in body.items()}


@pytest.mark.parametrize(("ep", "case", "body", "field"), BODY_CASES)
def test_bad_field_names_the_field(
    stack: dict[str, Any], ep: Endpoint, case: str, body: dict, field: str
) -> None:
    for client, path in _targets(stack, ep):
        response = client.post(path, json=_fill(stack, body), headers=_headers(stack, ep))
        error = assert_json_error(response, 422)
        assert error["field"] == field, (path, error)


@pytest.mark.parametrize(("ep", "raw", "ctype", "status"), RAW_CASES)
def test_bad_body_is_json_4xx(
    stack: dict[str, Any], ep: Endpoint, raw: bytes, ctype: str | None, status: int
) -> None:
    for client, path in _targets(stack, ep):
        headers = _headers(stack, ep)
        if ctype is not None:
            headers["Content-Type"] = ctype
        response = client.post(path, data=raw, headers=headers)
        assert_json_error(response, status)


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda ep: ep.name)
def test_valid_body_is_accepted(stack: dict[str, Any], ep: Endpoint) -> None:
    client, path = _targets(stack, ep)[0]
    response = client.post(path, json=_fill(stack, ep.valid), headers=_headers(stack, ep))
    assert response.status_code in (200, 201, 401), response.json  # login: wrong password
    assert response.status_code < 500


WRONG_METHODS = [
    ("user", "GET", "/register"),
    ("user", "PUT", "/login"),
    ("user", "GET", "/tokens/verify"),
    ("user", "POST", "/users/1"),
    ("user", "DELETE", "/users/1"),
    ("user", "POST", "/health"),
    ("user", "POST", "/openapi.json"),
    ("order", "DELETE", "/orders"),
    ("order", "PUT", "/orders/1"),
    ("order", "POST", "/health"),
    ("order", "PATCH", "/openapi.json"),
    ("gateway", "POST", "/health"),
    ("gateway", "DELETE", "/openapi.json"),
    ("gateway", "OPTIONS-ONLY", "/api/orders"),
]


@pytest.mark.parametrize(("app", "method", "path"), WRONG_METHODS)
def test_wrong_method_is_json_405(stack: dict[str, Any], app: str, method: str, path: str) -> None:
    client = stack[app].test_client()
    if method == "OPTIONS-ONLY":
        method = "TRACE"
    response = client.open(path, method=method, headers=auth(stack["token"]))
    assert_json_error(response, 405, "method_not_allowed")
    assert "Allow" in response.headers


UNKNOWN_ROUTES = [
    ("user", "/nope"),
    ("user", "/users/abc"),
    ("user", "/users/-1"),
    ("user", f"/users/{2**70}"),
    ("user", "/users/1/extra"),
    ("order", "/orders/abc"),
    ("order", f"/orders/{2**64}"),
    ("order", "/orders/1/items"),
    ("order", "/"),
    ("gateway", "/"),
    ("gateway", "/api"),
    ("gateway", "/api/unknown"),
    ("gateway", "/api/orders/abc"),
    ("gateway", "/api/users/abc"),
    ("gateway", "/api/users/tokens/verify"),
]


@pytest.mark.parametrize(("app", "path"), UNKNOWN_ROUTES)
def test_unknown_route_is_json_404(stack: dict[str, Any], app: str, path: str) -> None:
    response = stack[app].test_client().get(path, headers=auth(stack["token"]))
    assert_json_error(response, 404)


BAD_AUTH = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer " + "a" * 2000},
    {"Authorization": "Bearer not.a.token"},
    {"Authorization": "Bearer \u00e9\u00e9"},
]
PROTECTED = [
    ("user", "GET", "/users/1"),
    ("order", "GET", "/orders"),
    ("order", "GET", "/orders/1"),
    ("order", "POST", "/orders"),
    ("gateway", "GET", "/api/users/1"),
    ("gateway", "GET", "/api/orders"),
    ("gateway", "GET", "/api/orders/1"),
    ("gateway", "POST", "/api/orders"),
]


@pytest.mark.parametrize("headers", BAD_AUTH, ids=lambda h: repr(h)[:30])
@pytest.mark.parametrize(("app", "method", "path"), PROTECTED)
def test_bad_authorization_is_json_401(
    stack: dict[str, Any], app: str, method: str, path: str, headers: dict[str, str]
) -> None:
    client = stack[app].test_client()
    kwargs: dict[str, Any] = {"json": {"items": VALID_ITEMS}} if method == "POST" else {}
    response = client.open(path, method=method, headers=headers, **kwargs)
    assert_json_error(response, 401)


@pytest.mark.parametrize(
    "key",
    ["", "k" * 256, "caf\u00e9", "tab\tkey"],
    ids=["empty", "too-long", "non-ascii", "control-char"],
)
@pytest.mark.parametrize("app", ["order", "gateway"])
def test_bad_idempotency_key_is_400(stack: dict[str, Any], app: str, key: str) -> None:
    path = "/orders" if app == "order" else "/api/orders"
    headers = {**auth(stack["token"]), "Idempotency-Key": key}
    response = stack[app].test_client().post(path, json={"items": VALID_ITEMS}, headers=headers)
    error = assert_json_error(response, 400, "invalid_idempotency_key")
    assert error["field"] == "Idempotency-Key"


BAD_LIMITS = ["0", "-1", "abc", "501", "1.5", "", "9" * 40, "\u00b2", "\u0663", " 5"]


@pytest.mark.parametrize("limit", BAD_LIMITS)
@pytest.mark.parametrize("app", ["order", "gateway"])
def test_bad_list_limit_is_422(stack: dict[str, Any], app: str, limit: str) -> None:
    path = "/orders" if app == "order" else "/api/orders"
    response = (
        stack[app]
        .test_client()
        .get(path, query_string={"limit": limit}, headers=auth(stack["token"]))
    )
    assert assert_json_error(response, 422)["field"] == "limit"


@pytest.mark.parametrize("app", ["order", "gateway"])
def test_unknown_list_query_parameter_is_422(stack: dict[str, Any], app: str) -> None:
    path = "/orders" if app == "order" else "/api/orders"
    client = stack[app].test_client()
    response = client.get(path, query_string={"limt": "5"}, headers=auth(stack["token"]))
    error = assert_json_error(response, 422, "unknown_field")
    assert error["field"] == "limt"


def test_inventory_refuses_a_non_ascii_idempotency_key_like_order_service(
    inventory_app: Any,
) -> None:
    from tests.services.test_inventory_service import call

    response = call(
        inventory_app,
        "POST",
        "/reservations",
        json={"items": [{"sku": "a", "quantity": 1}]},
        headers={"Idempotency-Key": "caf\u00e9".encode()},  # was accepted: isprintable()
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "Idempotency-Key"
