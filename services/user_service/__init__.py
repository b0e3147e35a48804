"""user-service: registration, login with signed expiring tokens, and token verification.

``create_app(config)`` builds the app; configuration (defaults < environment < config):

- ``USER_DB_PATH`` (env ``USER_DB_PATH``): the SQLite file every instance shares.
- ``SECRET_KEY`` (env ``USER_SERVICE_SECRET``): the token-signing secret; every
  instance must have the same one. Required.
- ``TOKEN_MAX_AGE`` (env ``USER_TOKEN_MAX_AGE``): token lifetime in seconds (3600).
- ``PASSWORD_HASH_METHOD`` (env ``PASSWORD_HASH_METHOD``): werkzeug hash method.
- ``REGISTRY_ENABLED``: False serves ``/health`` without registering in Consul.
- ``CLOCK``: a ``() -> float`` Unix-time clock for token expiry (tests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask

from services.common.app import build_app
from services.common.db import Database, init_db
from services.common.health import init_health
from services.user_service import store
from services.user_service.tokens import TokenSigner
from services.user_service.views import bp

__all__ = ["create_app"]

SERVICE_NAME = "user-service"
VERSION = "1.0.0"

DEFAULTS: dict[str, Any] = {
    "SERVICE_NAME": SERVICE_NAME,
    "USER_DB_PATH": "",
    "SECRET_KEY": "",
    "TOKEN_MAX_AGE": 3600,
    "PASSWORD_HASH_METHOD": "scrypt",
}
ENV = {
    "USER_DB_PATH": "USER_DB_PATH",
    "SECRET_KEY": "USER_SERVICE_SECRET",
    "TOKEN_MAX_AGE": "USER_TOKEN_MAX_AGE",
    "PASSWORD_HASH_METHOD": "PASSWORD_HASH_METHOD",
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build a user-service app (see the module docstring for its configuration)."""
    app = build_app(
        __name__,
        title="user-service",
        version=VERSION,
        defaults=DEFAULTS,
        env=ENV,
        config=config,
        description="Users, passwords and login tokens.",
    )
    if not app.config["SECRET_KEY"]:
        raise RuntimeError(
            "user-service needs a token secret shared by all its instances: "
            "set USER_SERVICE_SECRET (or config SECRET_KEY)"
        )
    db_path = app.config["USER_DB_PATH"] or os.path.join(app.instance_path, "users.sqlite3")
    database = Database(db_path, store.SCHEMA, int(app.config["DB_BUSY_TIMEOUT_MS"]))
    init_db(app, database)
    app.extensions["token_signer"] = TokenSigner(
        app.config["SECRET_KEY"],
        int(app.config["TOKEN_MAX_AGE"]),
        clock=app.config.get("CLOCK") or time.time,
    )
    app.register_blueprint(bp)
    init_health(app, {"database": database.check})
    return app
