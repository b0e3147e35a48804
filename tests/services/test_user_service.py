"""user-service: register, login, tokens, users, health (Flask test client, no Consul)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from itsdangerous import URLSafeTimedSerializer

from services.user_service import create_app
from tests.services.conftest import SECRET, FakeClock, assert_json_error, auth

CREDS = {"username": "alice", "password": "password123"}


def test_register_login_verify_and_read(user_app: Flask) -> None:
    client = user_app.test_client()
    created = client.post("/register", json=CREDS)
    assert created.status_code == 201
    assert created.json["username"] == "alice"
    assert "password" not in created.data.decode() and "hash" not in created.data.decode()
    assert created.headers["Location"] == f"/users/{created.json['id']}"

    logged_in = client.post("/login", json=CREDS)
    assert logged_in.status_code == 200
    assert logged_in.json["token_type"] == "Bearer"
    assert logged_in.json["expires_in"] == 600
    token = logged_in.json["token"]

    verified = client.post("/tokens/verify", json={"token": token})
    assert verified.status_code == 200
    assert verified.json == {"user_id": created.json["id"], "username": "alice"}

    user = client.get(f"/users/{created.json['id']}", headers=auth(token))
    assert user.status_code == 200
    assert user.json == created.json


def test_duplicate_username_is_409_case_insensitively(user_app: Flask) -> None:
    client = user_app.test_client()
    assert client.post("/register", json=CREDS).status_code == 201
    for name in ("alice", "ALICE"):
        again = client.post("/register", json={**CREDS, "username": name})
        assert assert_json_error(again, 409, "username_taken")["field"] == "username"


def test_wrong_password_and_unknown_user_are_the_same_401(user_app: Flask) -> None:
    client = user_app.test_client()
    client.post("/register", json=CREDS)
    wrong = client.post("/login", json={**CREDS, "password": "not-the-password"})
    unknown = client.post("/login", json={**CREDS, "username": "nobody"})
    assert assert_json_error(wrong, 401, "invalid_credentials") == assert_json_error(
        unknown, 401, "invalid_credentials"
    )
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")


def _token(user_app: Flask) -> str:
    client = user_app.test_client()
    client.post("/register", json=CREDS)
    return client.post("/login", json=CREDS).json["token"]


def test_expired_token_is_401(user_app: Flask, clock: FakeClock) -> None:
    token = _token(user_app)
    client = user_app.test_client()
    clock.advance(599)
    assert client.post("/tokens/verify", json={"token": token}).status_code == 200
    clock.advance(2)
    expired = client.post("/tokens/verify", json={"token": token})
    assert_json_error(expired, 401, "token_expired")
    assert_json_error(client.get("/users/1", headers=auth(token)), 401, "token_expired")


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # tampered signature
        lambda t: "x" + t,  # tampered payload
        lambda t: URLSafeTimedSerializer("other-secret", salt="user-service.login-token").dumps(
            {"uid": 1, "usr": "alice"}
        ),  # signed with another secret
        lambda t: URLSafeTimedSerializer(SECRET).dumps({"uid": 1, "usr": "alice"}),  # other salt
        lambda t: "not-a-token",
        lambda t: "a" * 1024,
    ],
    ids=["signature", "payload", "secret", "salt", "garbage", "long"],
)
def test_forged_token_is_401(user_app: Flask, forge: Callable[[str], str]) -> None:
    token = _token(user_app)
    forged = forge(token)
    client = user_app.test_client()
    assert_json_error(client.post("/tokens/verify", json={"token": forged}), 401, "invalid_token")
    assert_json_error(client.get("/users/1", headers=auth(forged)), 401, "invalid_token")


def test_token_from_one_instance_verifies_on_another(make_user_app: Callable[..., Flask]) -> None:
    first, second = make_user_app(), make_user_app()
    token = _token(first)
    verified = second.test_client().post("/tokens/verify", json={"token": token})
    assert verified.status_code == 200
    assert verified.json["username"] == "alice"


def test_token_of_other_secret_fails_on_instance_with_different_secret(
    make_user_app: Callable[..., Flask],
) -> None:
    token = _token(make_user_app())
    other = make_user_app(SECRET_KEY="different")
    assert_json_error(other.test_client().post("/tokens/verify", json={"token": token}), 401)


def test_get_user_needs_token_and_existing_id(user_app: Flask) -> None:
    token = _token(user_app)
    client = user_app.test_client()
    assert_json_error(client.get("/users/1"), 401, "missing_token")
    assert_json_error(client.get("/users/1", headers={"Authorization": "Basic abc"}), 401)
    assert_json_error(client.get("/users/999", headers=auth(token)), 404, "user_not_found")
    assert_json_error(client.get("/users/abc", headers=auth(token)), 404)
    assert_json_error(client.get(f"/users/{2**70}", headers=auth(token)), 404)


def test_missing_secret_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER_SERVICE_SECRET", raising=False)
    with pytest.raises(RuntimeError, match="USER_SERVICE_SECRET"):
        create_app({"USER_DB_PATH": str(tmp_path / "u.db"), "REGISTRY_ENABLED": False})


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_DB_PATH", str(tmp_path / "env.sqlite3"))
    monkeypatch.setenv("USER_SERVICE_SECRET", "from-env")
    monkeypatch.setenv("USER_TOKEN_MAX_AGE", "42")
    monkeypatch.setenv("REGISTRY_ENABLED", "0")
    app = create_app()
    assert app.config["SECRET_KEY"] == "from-env"
    assert app.config["TOKEN_MAX_AGE"] == 42
    assert (tmp_path / "env.sqlite3").exists()


def test_database_is_wal_and_shared(user_app: Flask, make_user_app: Callable[..., Flask]) -> None:
    import sqlite3

    path = user_app.config["USER_DB_PATH"]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    user_app.test_client().post("/register", json=CREDS)
    other = make_user_app().test_client()
    assert_json_error(other.post("/register", json=CREDS), 409)


def test_health_reflects_the_database(user_app: Flask) -> None:
    client = user_app.test_client()
    healthy = client.get("/health")
    assert healthy.status_code == 200
    assert healthy.json["status"] == "passing"
    assert healthy.json["checks"]["database"]["status"] == "passing"

    path = user_app.config["USER_DB_PATH"]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    sick = client.get("/health")
    assert sick.status_code == 503
    assert sick.json["checks"]["database"]["status"] == "critical"


def test_health_through_the_registry_extension(tmp_path: Path) -> None:
    app = create_app(
        {"USER_DB_PATH": str(tmp_path / "u.db"), "SECRET_KEY": "s", "REGISTRY_ENABLED": True}
    )
    assert "consul_registry" in app.extensions  # serves /health; registers only when run
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.json["checks"]["database"]["status"] == "passing"
