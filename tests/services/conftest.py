"""Fixtures for app-level service tests: apps on temporary SQLite files, no Consul."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.gateway import create_app as create_gateway
from services.inventory_service import create_app as create_inventory_service
from services.order_service import create_app as create_order_service
from services.user_service import create_app as create_user_service
from tests.services.fakes import FlaskCaller

SECRET = "test-secret"
FAST_HASH = "pbkdf2:sha256:1000"  # werkzeug's default scrypt costs ~50 ms a hash


class FakeClock:
    """A Unix-time clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now  # moved by the test's thread only

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def new_user_app(db_dir: Path, clock: FakeClock, **overrides: Any) -> Flask:
    """A user-service app on ``db_dir``'s database, with the tests' secret and fast hash."""
    config = {
        "TESTING": True,
        "USER_DB_PATH": str(db_dir / "users.sqlite3"),
        "SECRET_KEY": SECRET,
        "PASSWORD_HASH_METHOD": FAST_HASH,
        "TOKEN_MAX_AGE": 600,
        "REGISTRY_ENABLED": False,
        "CLOCK": clock,
    }
    config.update(overrides)
    return create_user_service(config)


def new_inventory_app(db_dir: Path, initial_stock: int) -> Any:
    """An inventory-service app (FastAPI) on ``db_dir``'s database."""
    return create_inventory_service(
        {
            "INVENTORY_DB_PATH": str(db_dir / "inventory.sqlite3"),
            "INVENTORY_INITIAL_STOCK": initial_stock,
            "REGISTRY_ENABLED": False,
        }
    )


def new_order_app(db_dir: Path, caller: FlaskCaller) -> Flask:
    """An order-service app on ``db_dir``'s database calling through ``caller`` (and in it)."""
    app = create_order_service(
        {
            "TESTING": True,
            "ORDER_DB_PATH": str(db_dir / "orders.sqlite3"),
            "REGISTRY_ENABLED": False,
            "DISCOVERY_CLIENT": caller,
        }
    )
    caller.apps["order-service"] = app
    return app


@pytest.fixture
def clock() -> FakeClock:
    """The user-service token clock."""
    return FakeClock()


@pytest.fixture
def make_user_app(tmp_path: Path, clock: FakeClock) -> Callable[..., Flask]:
    """Build user-service apps sharing one database file and secret (like instances)."""

    def make(**overrides: Any) -> Flask:
        return new_user_app(tmp_path, clock, **overrides)

    return make


@pytest.fixture
def user_app(make_user_app: Callable[..., Flask]) -> Flask:
    """One user-service instance."""
    return make_user_app()


@pytest.fixture
def inventory_app(tmp_path: Path) -> Any:
    """One inventory-service instance (FastAPI), with a small initial stock per SKU."""
    return new_inventory_app(tmp_path, initial_stock=100)


@pytest.fixture
def caller(user_app: Flask, inventory_app: Any) -> FlaskCaller:
    """The in-process discovery client the other services call through."""
    return FlaskCaller({"user-service": user_app, "inventory-service": inventory_app})


@pytest.fixture
def order_app(tmp_path: Path, caller: FlaskCaller) -> Flask:
    """One order-service instance verifying tokens with ``user_app``."""
    return new_order_app(tmp_path, caller)


@pytest.fixture
def gateway_app(order_app: Flask, caller: FlaskCaller) -> Flask:
    """The gateway in front of ``user_app`` and ``order_app``."""
    return create_gateway({"TESTING": True, "REGISTRY_ENABLED": False, "DISCOVERY_CLIENT": caller})


_names = itertools.count()


@pytest.fixture
def login(user_app: Flask) -> Callable[[str], tuple[int, str]]:
    """Register and log in a user on ``user_app``; returns (user id, token)."""

    def register_and_login(name: str | None = None) -> tuple[int, str]:
        client: FlaskClient = user_app.test_client()
        username = name or f"user{next(_names)}"
        credentials = {"username": username, "password": "password123"}
        created = client.post("/register", json=credentials)
        assert created.status_code == 201, created.json
        logged_in = client.post("/login", json=credentials)
        assert logged_in.status_code == 200, logged_in.json
        return created.json["id"], logged_in.json["token"]

    return register_and_login


def auth(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


def assert_json_error(response: Any, status: int | None = None, code: str | None = None) -> dict:
    """Assert the response is a JSON error of the shared shape (4xx unless said)."""
    if status is None:
        assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    else:
        assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json", response.data[:300]
    error = response.get_json()["error"]
    assert error["status"] == response.status_code
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error
