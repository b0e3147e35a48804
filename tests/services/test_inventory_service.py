"""inventory-service (FastAPI) on its own, and order-service reserving through it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from flask import Flask

from consul_discovery.client.errors import NoHealthyInstanceError
from consul_discovery.testing.ports import free_port
from services.cluster.plan import REPO_ROOT
from tests.services.conftest import auth
from tests.services.fakes import FlaskCaller

ITEMS = {"items": [{"sku": "book", "quantity": 2}, {"sku": "pen", "quantity": 1}]}


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the ASGI app, in process."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://inv") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


def stock(app: Any, sku: str) -> int:
    return call(app, "GET", f"/stock/{sku}").json()["available"]


def test_reservation_takes_stock_once_per_key(inventory_app: Any) -> None:
    first = call(
        inventory_app, "POST", "/reservations", json=ITEMS, headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = call(
        inventory_app, "POST", "/reservations", json=ITEMS, headers={"Idempotency-Key": "k1"}
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert (stock(inventory_app, "book"), stock(inventory_app, "pen")) == (98, 99)

    other = {"items": [{"sku": "book", "quantity": 3}]}
    reused = call(
        inventory_app, "POST", "/reservations", json=other, headers={"Idempotency-Key": "k1"}
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_all_or_nothing_and_bad_input(inventory_app: Any) -> None:
    too_many = {"items": [{"sku": "lamp", "quantity": 1}, {"sku": "desk", "quantity": 101}]}
    short = call(
        inventory_app, "POST", "/reservations", json=too_many, headers={"Idempotency-Key": "x"}
    )
    assert short.status_code == 409
    assert short.json()["error"] == {
        "status": 409,
        "code": "insufficient_stock",
        "message": "not enough stock of desk",
        "sku": "desk",
        "available": 100,
    }
    assert stock(inventory_app, "lamp") == 100  # nothing taken
    no_key = call(inventory_app, "POST", "/reservations", json=ITEMS)
    assert no_key.status_code == 400
    assert no_key.json()["error"]["field"] == "Idempotency-Key"
    bad = call(
        inventory_app,
        "POST",
        "/reservations",
        json={"items": [{"sku": "a b", "quantity": 1}]},
        headers={"Idempotency-Key": "y"},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_field"
    assert bad.json()["error"]["field"] == "items[0].sku"  # named as the Flask services do
    health = call(inventory_app, "GET", "/health")
    assert health.status_code == 200
    assert health.json()["checks"] == {"database": {"status": "passing"}}


def test_an_order_retried_with_its_key_reserves_once(
    order_app: Flask, inventory_app: Any, login: Any, caller: FlaskCaller
) -> None:
    _, token = login()
    client = order_app.test_client()
    headers = {**auth(token), "Idempotency-Key": "order-1"}
    first = client.post("/orders", json=ITEMS, headers=headers)
    assert first.status_code == 201
    again = client.post("/orders", json=ITEMS, headers=headers)
    assert again.status_code == 201 and again.json["id"] == first.json["id"]
    assert stock(inventory_app, "book") == 98
    reservations = [c for c in caller.calls if c[0] == "inventory-service"]
    assert len(reservations) == 1  # the replayed order did not ask again

    # inventory-service down: no order, 503; the same key later reserves and orders once.
    caller.failures["inventory-service"] = NoHealthyInstanceError("inventory-service")
    headers2 = {**auth(token), "Idempotency-Key": "order-2"}
    down = client.post("/orders", json=ITEMS, headers=headers2)
    assert down.status_code == 503
    del caller.failures["inventory-service"]
    up = client.post("/orders", json=ITEMS, headers=headers2)
    assert up.status_code == 201
    listed = client.get("/orders", headers=auth(token)).json["orders"]
    assert [o["idempotency_key"] for o in listed] == ["order-1", "order-2"]
    assert stock(inventory_app, "book") == 96


def test_an_order_beyond_stock_is_refused_and_not_stored(
    order_app: Flask, inventory_app: Any, login: Any
) -> None:
    _, token = login()
    client = order_app.test_client()
    big = {"items": [{"sku": "rare", "quantity": 101}]}
    refused = client.post("/orders", json=big, headers=auth(token))
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "insufficient_stock"
    assert client.get("/orders", headers=auth(token)).json["orders"] == []


def test_asgi_service_is_observed_like_the_flask_ones(inventory_app: Any, caplog) -> None:
    """Route-template RED series, /metrics, request id echoed, caller's trace continued."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with caplog.at_level("INFO", logger="services.access"):
        answer = call(
            inventory_app,
            "GET",
            "/stock/lamp",
            headers={"X-Request-Id": "rid-inventory-1", "traceparent": parent},
        )
    assert answer.status_code == 200
    assert answer.headers["X-Request-Id"] == "rid-inventory-1"
    line = next(r.getMessage() for r in caplog.records if "rid-inventory-1" in r.getMessage())
    assert '"GET /stock/lamp" 200' in line
    assert "trace=0af7651916cd43dd8448eb211c80319c" in line
    metrics = call(inventory_app, "GET", "/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    series = [
        line
        for line in metrics.text.splitlines()
        if line.startswith("http_server_requests_total{") and 'route="/stock/{sku}"' in line
    ]
    assert series and all("/stock/lamp" not in s for s in series)  # template, not the path
    unmatched = call(inventory_app, "GET", "/no/such/path")
    assert unmatched.status_code == 404
    assert 'route="unmatched"' in call(inventory_app, "GET", "/metrics").text


def test_bodies_are_validated_as_the_flask_services_validate_theirs(inventory_app: Any) -> None:
    def reserve(item: dict[str, Any], key: str, **kwargs: Any) -> httpx.Response:
        return call(
            inventory_app,
            "POST",
            "/reservations",
            json={"items": [item]},
            headers={"Idempotency-Key": key},
            **kwargs,
        )

    for n, (item, code) in enumerate(
        [
            ({"sku": "pen", "quantity": 2.0}, "wrong_type"),  # not an integer in OpenAPI 3.0
            ({"sku": "pen", "quantity": 2.5}, "wrong_type"),
            ({"sku": "pen", "quantity": "2"}, "wrong_type"),  # no coercion from strings
            ({"sku": "pen", "quantity": True}, "wrong_type"),
            ({"sku": "pen", "quantity": 1, "note": "x"}, "unknown_field"),
            ({"sku": "pen"}, "missing_field"),
        ]
    ):
        refused = reserve(item, f"bad-{n}")
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["field"][:8]) == (code, "items[0]"), error
    not_json = call(
        inventory_app,
        "POST",
        "/reservations",
        content=b'{"items": []}',
        headers={"Idempotency-Key": "t", "Content-Type": "text/plain"},
    )
    assert not_json.status_code == 415
    for body in (b"{bad", b"", b"[]", b"null"):
        malformed = call(
            inventory_app,
            "POST",
            "/reservations",
            content=body,
            headers={"Idempotency-Key": "m", "Content-Type": "application/json"},
        )
        assert malformed.status_code == 400, (body, malformed.text)
        assert malformed.json()["error"]["code"] == "malformed_json"
    big = b'{"items": [], "x": "' + b"x" * 70_000 + b'"}'

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    for content in (big, streamed()):
        too_big = call(
            inventory_app,
            "POST",
            "/reservations",
            content=content,
            headers={"Idempotency-Key": "b", "Content-Type": "application/json"},
        )
        assert too_big.status_code == 413, too_big.text[:200]
        assert too_big.json()["error"]["code"] == "body_too_large"


def test_under_uvicorn_the_access_log_reaches_the_output(tmp_path: Path) -> None:
    """uvicorn configures only its own loggers: the service must print its access lines
    (trace and request id) itself, as the Flask services do under gunicorn."""
    port = free_port()
    env = {
        **os.environ,
        "INVENTORY_DB_PATH": str(tmp_path / "inventory.sqlite3"),
        "REGISTRY_ENABLED": "0",
    }
    log = tmp_path / "uvicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "services.inventory_service:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/stock/lamp",
                    headers={"X-Request-Id": "rid-under-uvicorn"},
                )
                break
            except httpx.TransportError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while "rid=rid-under-uvicorn" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        line = next(ln for ln in log.read_text().splitlines() if "rid-under-uvicorn" in ln)
        assert 'services.access inventory-service 127.0.0.1 "GET /stock/lamp" 200' in line
    finally:
        server.terminate()
        server.wait(timeout=30)
