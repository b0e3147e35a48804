"""order-service: idempotent creation, owner-only reads, calls to user-service."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

import pytest
from flask import Flask

from consul_discovery.client.errors import AllAttemptsFailedError, NoHealthyInstanceError
from tests.services.conftest import FakeClock, assert_json_error, auth
from tests.services.fakes import FlaskCaller

ITEMS = {"items": [{"sku": "book", "quantity": 2}, {"sku": "pen", "quantity": 1}]}
Login = Callable[..., tuple[int, str]]


def _order_rows(app: Flask) -> int:
    with sqlite3.connect(app.config["ORDER_DB_PATH"]) as conn:
        return conn.execute("SELECT count(*) FROM orders").fetchone()[0]


def test_create_get_and_list(order_app: Flask, login: Login, caller: FlaskCaller) -> None:
    user_id, token = login()
    client = order_app.test_client()
    created = client.post("/orders", json=ITEMS, headers=auth(token))
    assert created.status_code == 201
    order = created.json
    assert order["user_id"] == user_id
    assert order["items"] == ITEMS["items"]
    assert order["status"] == "created"
    assert created.headers["Location"] == f"/orders/{order['id']}"
    assert "Idempotent-Replayed" not in created.headers
    # the token was checked with user-service, then the items reserved with
    # inventory-service, both through the discovery client
    assert [c[:3] for c in caller.calls[-2:]] == [
        ("user-service", "POST", "/tokens/verify"),
        ("inventory-service", "POST", "/reservations"),
    ]

    fetched = client.get(f"/orders/{order['id']}", headers=auth(token))
    assert fetched.status_code == 200
    assert fetched.json == order

    second = client.post("/orders", json=ITEMS, headers=auth(token)).json
    listed = client.get("/orders", headers=auth(token))
    assert [o["id"] for o in listed.json["orders"]] == [order["id"], second["id"]]
    assert [o["id"] for o in client.get("/orders?limit=1", headers=auth(token)).json["orders"]] == [
        order["id"]
    ]


def test_idempotency_key_replay_creates_one_order(order_app: Flask, login: Login) -> None:
    _, token = login()
    client = order_app.test_client()
    headers = {**auth(token), "Idempotency-Key": "key-1"}
    first = client.post("/orders", json=ITEMS, headers=headers)
    replay = client.post("/orders", json=ITEMS, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.json == first.json
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert _order_rows(order_app) == 1


def test_same_key_different_body_is_422(order_app: Flask, login: Login) -> None:
    _, token = login()
    client = order_app.test_client()
    headers = {**auth(token), "Idempotency-Key": "key-1"}
    first = client.post("/orders", json=ITEMS, headers=headers)
    other = client.post("/orders", json={"items": [{"sku": "x", "quantity": 9}]}, headers=headers)
    error = assert_json_error(other, 422, "idempotency_key_reused")
    assert error["field"] == "Idempotency-Key"
    assert error["order_id"] == first.json["id"]
    assert _order_rows(order_app) == 1


def test_keys_are_scoped_per_user(order_app: Flask, login: Login) -> None:
    (_, alice), (_, bob) = login(), login()
    client = order_app.test_client()
    a = client.post("/orders", json=ITEMS, headers={**auth(alice), "Idempotency-Key": "same"})
    b = client.post("/orders", json=ITEMS, headers={**auth(bob), "Idempotency-Key": "same"})
    assert a.status_code == b.status_code == 201
    assert a.json["id"] != b.json["id"]
    assert _order_rows(order_app) == 2


def test_concurrent_replays_create_exactly_one_order(
    order_app: Flask, login: Login, tmp_path: object
) -> None:
    from services.order_service import create_app

    _, token = login()
    # two "instances" sharing the database, like the cluster's order-service instances
    twin = create_app(
        {
            "TESTING": True,
            "ORDER_DB_PATH": order_app.config["ORDER_DB_PATH"],
            "REGISTRY_ENABLED": False,
            "DISCOVERY_CLIENT": order_app.config["DISCOVERY_CLIENT"],
        }
    )
    apps = [order_app, twin]
    threads_count = 16
    barrier = threading.Barrier(threads_count)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def post(index: int) -> None:
        client = apps[index % 2].test_client()
        barrier.wait(timeout=10)
        response = client.post(
            "/orders", json=ITEMS, headers={**auth(token), "Idempotency-Key": "race"}
        )
        with lock:
            results.append((response.status_code, response.json["id"]))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == threads_count
    assert {status for status, _ in results} == {201}
    assert len({order_id for _, order_id in results}) == 1
    assert _order_rows(order_app) == 1


def test_orders_are_owner_only(order_app: Flask, login: Login) -> None:
    (_, alice), (_, bob) = login(), login()
    client = order_app.test_client()
    order = client.post("/orders", json=ITEMS, headers=auth(alice)).json
    # someone else's order looks exactly like a missing one
    theirs = assert_json_error(
        client.get(f"/orders/{order['id']}", headers=auth(bob)), 404, "order_not_found"
    )
    missing = assert_json_error(client.get("/orders/99999", headers=auth(bob)), 404)
    assert theirs["code"] == missing["code"]
    assert client.get("/orders", headers=auth(bob)).json == {"orders": []}


def test_token_problems_are_401(order_app: Flask, login: Login, clock: FakeClock) -> None:
    _, token = login()
    client = order_app.test_client()
    assert_json_error(client.post("/orders", json=ITEMS), 401, "missing_token")
    assert_json_error(client.get("/orders", headers=auth(token + "x")), 401, "invalid_token")
    assert_json_error(
        client.get("/orders", headers={"Authorization": f"Token {token}"}), 401, "invalid_token"
    )
    clock.advance(3600)
    expired = client.post("/orders", json=ITEMS, headers=auth(token))
    assert_json_error(expired, 401, "token_expired")  # user-service's verdict, relayed
    assert expired.headers["WWW-Authenticate"].startswith("Bearer")
    assert _order_rows(order_app) == 0


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (NoHealthyInstanceError("user-service"), 503, "no_healthy_instance"),
        (AllAttemptsFailedError("user-service", [("u1", OSError("refused"))]), 502, None),
    ],
)
def test_user_service_outage_is_json_503_or_502(
    order_app: Flask,
    login: Login,
    caller: FlaskCaller,
    failure: Exception,
    status: int,
    code: str | None,
) -> None:
    _, token = login()
    caller.failures["user-service"] = failure
    response = order_app.test_client().post("/orders", json=ITEMS, headers=auth(token))
    error = assert_json_error(response, status, code)
    assert error["service"] == "user-service"
    assert response.headers["Failure-Origin"] == "dependency"  # relayed, not ours
    assert order_app.test_client().get("/health").status_code == 200  # not our dependency


def test_user_service_5xx_is_502(order_app: Flask, login: Login, caller: FlaskCaller) -> None:
    _, token = login()
    broken = Flask("broken-user-service")
    broken.add_url_rule("/tokens/verify", "v", lambda: ("boom", 500), methods=["POST"])
    caller.apps["user-service"] = broken
    response = order_app.test_client().get("/orders", headers=auth(token))
    assert_json_error(response, 502, "upstream_failed")
    assert response.headers["Failure-Origin"] == "dependency"


def test_health_reflects_the_database(order_app: Flask) -> None:
    import os

    client = order_app.test_client()
    assert client.get("/health").status_code == 200
    path = order_app.config["ORDER_DB_PATH"]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    assert client.get("/health").status_code == 503
