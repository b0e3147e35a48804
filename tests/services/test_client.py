"""services.client and services.demo against a gateway on a real HTTP server."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from flask import Flask

from consul_discovery.client import ServiceClient
from services.client import ApiError, PlatformClient, TransportError
from services.demo import main, run_demo
from tests.harness.ports import free_port
from tests.services.fakes import StaticSource, serve


@pytest.fixture
def gateway_url(gateway_app: Flask) -> Iterator[str]:
    """The gateway app served over HTTP on loopback."""
    with serve(gateway_app) as port:
        yield f"http://127.0.0.1:{port}"


def test_client_flow_through_the_gateway(gateway_url: str) -> None:
    client = PlatformClient.via_gateway(gateway_url)
    user = client.register("frank", "password123")
    assert user["username"] == "frank"
    token = client.login("frank", "password123")
    assert client.token == token
    order = client.create_order([("book", 2), {"sku": "pen", "quantity": 1}], idempotency_key="k")
    assert order["items"] == [{"sku": "book", "quantity": 2}, {"sku": "pen", "quantity": 1}]
    again = client.create_order([("book", 2), ("pen", 1)], idempotency_key="k")
    assert again == order
    assert client.get_order(order["id"]) == order
    other = client.create_order([("cup", 1)])  # a generated key: a new order
    assert [o["id"] for o in client.list_orders()] == [order["id"], other["id"]]


def test_client_raises_api_error_with_the_upstream_json(gateway_url: str) -> None:
    client = PlatformClient.via_gateway(gateway_url)
    client.register("gina", "password123")
    with pytest.raises(ApiError) as duplicate:
        client.register("gina", "password123")
    assert duplicate.value.status == 409
    assert duplicate.value.code == "username_taken"
    assert duplicate.value.field == "username"
    assert duplicate.value.body["error"]["status"] == 409
    with pytest.raises(ApiError) as wrong:
        client.login("gina", "wrong-password")
    assert wrong.value.status == 401
    with pytest.raises(ApiError) as unauthenticated:
        client.get_order(1)
    assert unauthenticated.value.code == "missing_token"
    client.login("gina", "password123")
    with pytest.raises(ApiError) as invalid:
        client.create_order([("bad sku!", 1)])
    assert invalid.value.status == 422
    assert invalid.value.field == "items[0].sku"


def test_client_transport_error_when_nothing_listens() -> None:
    client = PlatformClient.via_gateway(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(TransportError):
        client.register("henry", "password123")


def test_client_via_discovery(user_app: Flask, order_app: Flask) -> None:
    with serve(user_app) as user_port, serve(order_app) as order_port:
        source = StaticSource(
            {
                "user-service": [("127.0.0.1", user_port)],
                "order-service": [("127.0.0.1", order_port)],
            }
        )
        with ServiceClient(source=source) as service_client:
            client = PlatformClient.via_discovery(service_client)
            client.register("iris", "password123")
            client.login("iris", "password123")
            order = client.create_order([("book", 1)])
            assert client.get_order(order["id"]) == order
        empty = StaticSource({"user-service": []})
        with (
            ServiceClient(source=empty) as service_client,
            pytest.raises(TransportError, match="no healthy instance"),
        ):
            PlatformClient.via_discovery(service_client).register("jack", "password123")


def test_demo_runs_the_seed_flow(gateway_url: str) -> None:
    out = io.StringIO()
    order = run_demo(PlatformClient.via_gateway(gateway_url), out=out)
    text = out.getvalue()
    for step in (
        "[1/5] register",
        "[2/5] log in",
        "[3/5] create an order",
        "[4/5] fetch order",
        "[5/5] stock of 'book' in inventory-service",
    ):
        assert step in text
    assert text.rstrip().endswith("demo OK")
    assert order["items"] == [{"sku": "book", "quantity": 2}, {"sku": "pen", "quantity": 1}]


def test_demo_main_exit_codes(gateway_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # No Consul here: the live-KV step is covered by the cluster's end-to-end test.
    assert main(["--gateway", gateway_url, "--no-live-config"]) == 0
    assert "demo OK" in capsys.readouterr().out
    assert main(["--gateway", f"http://127.0.0.1:{free_port()}", "--timeout", "2"]) == 1
    assert "demo FAILED" in capsys.readouterr().err
