"""The shared pieces: validation rules, JSON 500s, the SQLite datastore, config layering."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from services.common.app import build_app, env_flag
from services.common.db import Database, DatabaseUnavailableError
from services.common.errors import ApiError
from services.common.validation import Field, json_schema, validate_object
from tests.services.conftest import assert_json_error

SCHEMA = (
    Field("name", str, min_length=1, max_length=3, pattern=r"[a-z]+"),
    Field("count", int, required=False, minimum=0, maximum=5),
    Field("tags", list, required=False, max_length=2, items=(Field("t", str),)),
)


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({}, "missing_field", "name"),
        ({"name": None}, "missing_field", "name"),
        ({"name": 1}, "wrong_type", "name"),
        ({"name": "abcd"}, "invalid_field", "name"),
        ({"name": "A"}, "invalid_field", "name"),
        ({"name": "a", "count": True}, "wrong_type", "count"),
        ({"name": "a", "count": 1.0}, "wrong_type", "count"),
        ({"name": "a", "count": 6}, "invalid_field", "count"),
        ({"name": "a", "tags": [{"t": "x"}] * 3}, "invalid_field", "tags"),
        ({"name": "a", "tags": [{"t": 5}]}, "wrong_type", "tags[0].t"),
        ({"name": "a", "tags": [{}]}, "missing_field", "tags[0].t"),
        ({"name": "a", "extra": 1}, "unknown_field", "extra"),
        ([], "wrong_type", "body"),
    ],
)
def test_validation_names_the_field(data: object, code: str, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        validate_object(SCHEMA, data)
    assert (caught.value.status, caught.value.code, caught.value.field) == (422, code, field)


def test_validation_returns_known_fields_and_skips_absent_optionals() -> None:
    assert validate_object(SCHEMA, {"name": "ab", "count": None}) == {"name": "ab"}
    rendered = json_schema(SCHEMA)
    assert rendered["required"] == ["name"]
    assert rendered["properties"]["name"]["pattern"] == "^[a-z]+$"
    assert rendered["properties"]["tags"]["items"]["required"] == ["t"]


@pytest.fixture
def bare_app() -> Flask:
    app = build_app(
        "bare", title="bare", version="0", defaults={}, env={}, config={"TESTING": True}
    )

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    return app


def test_unexpected_errors_are_json_500_without_internals(bare_app: Flask) -> None:
    response = bare_app.test_client().get("/boom")
    error = assert_json_error(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)
    assert error["message"] == "internal server error"


def test_request_id_is_echoed_or_generated(bare_app: Flask) -> None:
    client = bare_app.test_client()
    assert (
        client.get("/openapi.json", headers={"X-Request-Id": "abc"}).headers["X-Request-Id"]
        == "abc"
    )
    assert len(client.get("/openapi.json").headers["X-Request-Id"]) == 32


def test_database_schema_wal_and_check(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "sub" / "x.sqlite3"), "CREATE TABLE IF NOT EXISTS t (a);")
    db.create_schema()
    db.create_schema()  # idempotent: instances starting together all run it
    assert db.check() is True
    conn = db.connect()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    conn.close()
    missing = Database(str(tmp_path / "gone.sqlite3"), "")
    with pytest.raises(DatabaseUnavailableError):
        missing.check()


def test_unopenable_database_fails_app_creation(tmp_path: Path) -> None:
    from services.order_service import create_app

    (tmp_path / "file").write_text("")
    with pytest.raises(DatabaseUnavailableError):
        create_app({"ORDER_DB_PATH": str(tmp_path / "file" / "db"), "REGISTRY_ENABLED": False})


def test_env_flag() -> None:
    assert all(env_flag(v) for v in ("1", "true", "YES", " on "))
    assert not any(env_flag(v) for v in ("0", "false", "no", "", "off"))


def test_unreachable_datastore_is_json_503(user_app: Flask) -> None:
    import os

    path = user_app.config["USER_DB_PATH"]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    os.mkdir(path)  # a directory where the database was: sqlite cannot open it
    client = user_app.test_client()
    response = client.post("/register", json={"username": "kate", "password": "password123"})
    assert_json_error(response, 503, "datastore_unavailable")
    assert client.get("/health").status_code == 503


def test_access_log_line(user_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.DEBUG, logger="services.access"):
        user_app.test_client().post("/login", json={}, headers={"X-Request-Id": "rid-1"})
        user_app.test_client().get("/health")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "services.access"]
    level, message = lines[0]
    assert level == logging.INFO
    assert message.startswith('user-service 127.0.0.1 "POST /login" 422 ')
    assert message.endswith("rid=rid-1")
    assert lines[1][0] == logging.DEBUG  # health probes stay out of the INFO log
