"""gateway: routing, faithful relaying, 502/503 JSON, and a real ServiceClient path."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask, Response, request

from consul_discovery.client import ServiceClient
from consul_discovery.client.errors import (
    AllAttemptsFailedError,
    ConsulUnavailableError,
    NoHealthyInstanceError,
    UnknownServiceError,
)
from services.gateway import create_app
from services.gateway.routes import Target, public_location, resolve
from tests.services.conftest import assert_json_error, auth
from tests.services.fakes import FlaskCaller, StaticSource, serve

NAMES = {
    "USER_SERVICE_NAME": "user-service",
    "ORDER_SERVICE_NAME": "order-service",
    "INVENTORY_SERVICE_NAME": "inventory-service",
}
ITEMS = {"items": [{"sku": "book", "quantity": 2}]}


@pytest.mark.parametrize(
    ("public", "target"),
    [
        ("/api/users/register", Target("user-service", "/register", False, "/api/users/register")),
        ("/api/users/login", Target("user-service", "/login", False, "/api/users/login")),
        ("/api/users/7", Target("user-service", "/users/7", False, "/api/users/<rest>")),
        (
            "/api/users/registerx",
            Target("user-service", "/users/registerx", False, "/api/users/<rest>"),
        ),
        (
            "/api/users/tokens/verify",
            Target("user-service", "/users/tokens/verify", False, "/api/users/<rest>"),
        ),
        ("/api/orders", Target("order-service", "/orders", True, "/api/orders")),
        ("/api/orders/3", Target("order-service", "/orders/3", True, "/api/orders/<rest>")),
        ("/api/ordersx", None),
        ("/api/other", None),
    ],
)
def test_route_table(public: str, target: Target | None) -> None:
    assert resolve(public, NAMES) == target


def test_location_is_mapped_back_to_public_paths() -> None:
    assert public_location("order-service", "/orders/5", NAMES) == "/api/orders/5"
    assert public_location("user-service", "/users/5", NAMES) == "/api/users/5"
    assert public_location("user-service", "/elsewhere", NAMES) == "/elsewhere"
    assert public_location("inventory-service", "/stock/pen", NAMES) == "/api/stock/pen"


def test_the_seed_flow_through_the_gateway(gateway_app: Flask, caller: FlaskCaller) -> None:
    client = gateway_app.test_client()
    creds = {"username": "carol", "password": "password123"}
    created = client.post("/api/users/register", json=creds)
    assert created.status_code == 201
    assert created.headers["Location"] == f"/api/users/{created.json['id']}"
    token = client.post("/api/users/login", json=creds).json["token"]
    headers = {**auth(token), "Idempotency-Key": "k-1", "X-Canary": "1"}
    client.set_cookie("session", "1")
    order = client.post("/api/orders", json=ITEMS, headers=headers)
    assert order.status_code == 201
    assert order.headers["Location"] == f"/api/orders/{order.json['id']}"
    # end-to-end headers go upstream (routes and hash policies match on them)
    service, method, path, kwargs = next(c for c in caller.calls if c[0] == "order-service")
    assert (service, method, path) == ("order-service", "POST", "/orders")
    assert kwargs["headers"]["Authorization"] == f"Bearer {token}"
    assert kwargs["headers"]["Idempotency-Key"] == "k-1"
    assert kwargs["headers"]["Cookie"] == "session=1"
    assert kwargs["headers"]["X-Canary"] == "1"
    assert kwargs["headers"]["X-Request-Id"] == order.headers["X-Request-Id"]

    replay = client.post("/api/orders", json=ITEMS, headers=headers)
    assert replay.status_code == 201
    assert replay.json == order.json
    assert replay.headers["Idempotent-Replayed"] == "true"
    fetched = client.get(f"/api/orders/{order.json['id']}", headers=auth(token))
    assert fetched.json == order.json
    assert client.get("/api/orders?limit=5", headers=auth(token)).json["orders"] == [order.json]
    assert client.get(f"/api/users/{created.json['id']}", headers=auth(token)).json == created.json


def test_hop_by_hop_and_gateway_owned_headers_stay_at_the_gateway(
    gateway_app: Flask, caller: FlaskCaller
) -> None:
    client = gateway_app.test_client()
    headers = {
        "Connection": "keep-alive, X-Private-Hop",
        "X-Private-Hop": "only for this hop",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "TE": "trailers",
        "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Request-Id": "from-the-client",
        "Failure-Origin": "dependency",
        "Accept-Encoding": "br",
        "X-Forwarded-For": "203.0.113.9",
        "Idempotency-Key": "not-for-register",
        "X-Tenant": "acme",
    }
    client.post("/api/users/register", json={"username": "x", "password": "y"}, headers=headers)
    sent = next(c[3]["headers"] for c in caller.calls if c[2] == "/register")
    names = {name.lower() for name in sent}
    for gone in ("connection", "x-private-hop", "keep-alive", "proxy-authorization", "te",
                 "traceparent", "failure-origin", "accept-encoding", "idempotency-key", "host",
                 "content-length"):  # fmt: skip
        assert gone not in names, gone
    assert sent["X-Tenant"] == "acme"
    assert sent["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    # The client's address goes to discovery (a SourceIP hash policy), not upstream.
    call = next(c[3] for c in caller.calls if c[2] == "/register")
    assert call["source_ip"] == "127.0.0.1" and "source_ip" not in names
    assert sent["X-Request-Id"] != "" and "Basic" not in str(sent)


def test_upstream_errors_are_relayed_byte_for_byte(gateway_app: Flask, caller: FlaskCaller) -> None:
    odd = Flask("odd-upstream")

    @odd.route("/users/<int:user_id>", methods=["GET"])
    def anything(user_id: int) -> Response:
        status = int(request.args.get("status", "418"))
        body = request.args.get("body", "short and stout")
        return Response(
            body,
            status=status,
            content_type="text/plain; charset=utf-8",
            headers={"Retry-After": "3", "X-Internal": "hidden"},
        )

    caller.apps["user-service"] = odd
    client = gateway_app.test_client()
    for status in (400, 404, 409, 418, 500, 503):
        response = client.get(f"/api/users/7?status={status}&body=upstream-{status}")
        assert response.status_code == status
        assert response.data == f"upstream-{status}".encode()
        assert response.content_type == "text/plain; charset=utf-8"
        assert response.headers["Retry-After"] == "3"
        assert "X-Internal" not in response.headers


def test_upstream_json_errors_are_relayed(gateway_app: Flask, caller: FlaskCaller) -> None:
    client = gateway_app.test_client()
    creds = {"username": "dave", "password": "password123"}
    client.post("/api/users/register", json=creds)
    duplicate = client.post("/api/users/register", json=creds)
    direct = caller.apps["user-service"].test_client().post("/register", json=creds)
    assert duplicate.status_code == direct.status_code == 409
    assert duplicate.get_json() == direct.get_json()
    assert_json_error(client.post("/api/users/login", json={**creds, "password": "nope"}), 401)
    assert_json_error(client.get("/api/orders/1"), 401, "missing_token")


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (NoHealthyInstanceError("order-service"), 503, "no_healthy_instance"),
        (UnknownServiceError("order-service", ["consul"]), 503, "no_healthy_instance"),
        (ConsulUnavailableError("consul down"), 503, "no_healthy_instance"),
        (AllAttemptsFailedError("order-service", [("o1", OSError("reset"))]), 502, None),
    ],
)
def test_discovery_failures_are_json(
    gateway_app: Flask, caller: FlaskCaller, failure: Exception, status: int, code: str | None
) -> None:
    caller.failures["order-service"] = failure
    response = gateway_app.test_client().get("/api/orders")
    error = assert_json_error(response, status, code)
    assert error["service"] == "order-service"
    assert response.headers["Failure-Origin"] == "dependency"
    if status == 503:
        assert response.headers["Retry-After"] == "1"


def test_gateway_answers_its_own_errors_in_json(gateway_app: Flask) -> None:
    client = gateway_app.test_client()
    assert_json_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_json_error(client.get("/api/users/abc"), 404, "not_found")  # no upstream call
    assert_json_error(client.get("/not-api"), 404, "not_found")
    assert_json_error(client.post("/health"), 405, "method_not_allowed")
    too_big = client.post("/api/orders", data=b"x" * 70_000, content_type="application/json")
    assert_json_error(too_big, 413, "body_too_large")
    assert client.get("/health").status_code == 200


@pytest.fixture
def real_upstreams(
    make_user_app: Callable[..., Flask],
) -> Iterator[tuple[Flask, ServiceClient]]:
    """Two user-service instances on real HTTP servers, behind a real ServiceClient."""
    first, second = make_user_app(), make_user_app()
    with serve(first) as port1, serve(second) as port2:
        source = StaticSource(
            {"user-service": [("127.0.0.1", port1), ("127.0.0.1", port2)], "order-service": []}
        )
        client = ServiceClient(source=source, resolve_timeout=1.0)
        try:
            yield create_app({"REGISTRY_ENABLED": False, "DISCOVERY_CLIENT": client}), client
        finally:
            client.close()


def test_real_service_client_over_http(real_upstreams: tuple[Flask, ServiceClient]) -> None:
    gateway, _ = real_upstreams
    client = gateway.test_client()
    creds = {"username": "erin", "password": "password123"}
    assert client.post("/api/users/register", json=creds).status_code == 201
    assert_json_error(client.post("/api/users/register", json=creds), 409, "username_taken")
    tokens = {client.post("/api/users/login", json=creds).json["token"] for _ in range(4)}
    assert tokens
    bad = client.post("/api/users/login", data="{", content_type="application/json")
    assert_json_error(bad, 400, "malformed_json")
    # order-service has no instance at all: 503 JSON, never a hang or a 500
    assert_json_error(client.get("/api/orders"), 503, "no_healthy_instance")


def test_idempotency_key_goes_only_to_routes_that_honour_it(
    gateway_app: Flask, caller: FlaskCaller, login: Callable[..., tuple[int, str]]
) -> None:
    _, token = login()
    client = gateway_app.test_client()
    key = {"Idempotency-Key": "k-1"}
    client.post("/api/users/register", json={"username": "x", "password": "y"}, headers=key)
    client.post("/api/users/login", json={"username": "x", "password": "y"}, headers=key)
    client.post("/api/orders", json=ITEMS, headers={**key, **auth(token)})
    sent = {path: call_kwargs["headers"] for _svc, _m, path, call_kwargs in caller.calls}
    assert "Idempotency-Key" not in sent["/register"]
    assert "Idempotency-Key" not in sent["/login"]
    assert sent["/orders"]["Idempotency-Key"] == "k-1"


def test_a_read_timeout_on_register_is_never_resent(make_user_app: Callable[..., Flask]) -> None:
    """The caller's key is not passed to /register, so the client does not resend it."""
    hits: list[tuple[str, str | None]] = []
    lock = threading.Lock()

    def slow_register_app() -> Flask:
        app = make_user_app()
        view = app.view_functions["users.register"]

        def slow_register():  # the real view, answered after the gateway gave up
            with lock:
                hits.append((request.path, request.headers.get("Idempotency-Key")))
            time.sleep(0.6)
            return view()

        app.view_functions["users.register"] = slow_register
        return app

    first, second = slow_register_app(), slow_register_app()
    with serve(first) as port1, serve(second) as port2:
        source = StaticSource(
            {"user-service": [("127.0.0.1", port1), ("127.0.0.1", port2)], "order-service": []}
        )
        with ServiceClient(source=source, resolve_timeout=1.0) as client:
            gateway = create_app(
                {"REGISTRY_ENABLED": False, "DISCOVERY_CLIENT": client, "UPSTREAM_TIMEOUT": 0.2}
            )
            creds = {"username": "frank", "password": "password123"}
            answer = gateway.test_client().post(
                "/api/users/register", json=creds, headers={"Idempotency-Key": "reg-1"}
            )
            assert_json_error(answer, 502, "upstream_failed")
            time.sleep(0.8)  # let the first (and only) attempt finish upstream
    assert hits == [("/register", None)]  # one attempt, without the key


def test_an_upstream_outage_is_logged_twice_not_per_request(
    gateway_app: Flask, caller: FlaskCaller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.upstream")
    client = gateway_app.test_client()
    caller.failures["order-service"] = NoHealthyInstanceError("order-service")
    for _ in range(20):
        assert client.get("/api/orders").status_code == 503
    del caller.failures["order-service"]
    client.get("/api/orders")
    client.get("/api/orders")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("order-service is unavailable")
    assert "back after" in warnings[1] and "(20 failed attempts)" in warnings[1]
