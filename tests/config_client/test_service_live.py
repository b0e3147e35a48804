"""order-service with its live settings from a real agent (Flask extension, in-process)."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask

from consul_discovery.config.flask import current_settings
from services.order_service import create_app
from tests.config_client.conftest import KV
from tests.harness.agent import ConsulAgent


def _wait(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_order_service_limits_follow_kv(kv_agent: ConsulAgent, kv: KV, tmp_path: Path) -> None:
    kv.put("config/order-service/orders/max_items", "20")
    app: Flask = create_app(
        {
            "TESTING": True,
            "REGISTRY_ENABLED": False,
            "CONFIG_ENABLED": True,
            "CONSUL_HTTP_ADDR": kv_agent.address,
            "ORDER_DB_PATH": str(tmp_path / "orders.sqlite3"),
        }
    )
    ext = app.extensions["consul_config"]
    try:
        assert app.config["MAX_ORDER_ITEMS"] == 20 and app.config["MAX_LIST_LIMIT"] == 500
        http = app.test_client()
        assert http.get("/orders?limit=300").status_code == 401  # limit fine, no token

        kv.put("config/order-service/orders/max_list_limit", "100")
        _wait(lambda: app.config["MAX_LIST_LIMIT"] == 100)
        response = http.get("/orders?limit=300")
        assert response.status_code == 422 and "1 to 100" in response.get_data(as_text=True)

        kv.put("config/order-service/orders/max_list_limit", "5000")  # fails validation
        _wait(lambda: ext.client.last_error is not None)
        assert app.config["MAX_LIST_LIMIT"] == 100  # the last good value stays

        kv.delete("config/order-service", recurse=True)  # deletes restore the app's own
        _wait(lambda: app.config["MAX_LIST_LIMIT"] == 500)
        assert app.config["MAX_ORDER_ITEMS"] == 50
        with app.app_context():
            assert dict(current_settings()) == {}
    finally:
        ext.client.close()
