"""The skeleton every service's ``create_app`` starts from."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from services.common.access_log import init_access_log
from services.common.body_limit import init_body_limit
from services.common.errors import install_error_handlers
from services.common.metrics import init_metrics
from services.common.openapi import init_openapi
from services.common.tracing import init_tracing

#: Defaults shared by every service; each may be overridden by its own defaults,
#: then by environment variables, then by the ``config`` passed to ``create_app``.
COMMON_DEFAULTS: dict[str, Any] = {
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "REGISTRY_ENABLED": True,
    "DB_BUSY_TIMEOUT_MS": 5000,
    "CONNECT_TIMEOUT": 1.0,
    "JSON_SORT_KEYS": False,
}


def init_logging() -> None:
    """INFO and up to stderr as ``time logger message`` (the access log's lines among
    them), unless the process has configured logging itself. gunicorn and uvicorn set
    up only their own loggers, so without this ``services.access`` would print nothing."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def env_flag(value: str) -> bool:
    """Parse a boolean environment value (1/true/yes/on)."""
    return value.strip().lower() in {"1", "true", "yes", "on"}


def build_app(
    import_name: str,
    *,
    title: str,
    version: str,
    defaults: Mapping[str, Any],
    env: Mapping[str, str],
    config: Mapping[str, Any] | None,
    description: str = "",
) -> Flask:
    """A Flask app with the shared config layering, JSON errors, the body limit (also
    for chunked bodies), access log, trace context, RED metrics and ``/metrics``, and
    OpenAPI.

    ``env`` maps config keys to environment variable names read at creation time.
    """
    app = Flask(import_name)
    app.config.update(COMMON_DEFAULTS)
    app.config.update(defaults)
    for key, var in env.items():
        if var in os.environ:
            raw = os.environ[var]
            current = app.config.get(key)
            if isinstance(current, bool):
                app.config[key] = env_flag(raw)
            elif isinstance(current, int):
                app.config[key] = int(raw)
            elif isinstance(current, float):
                app.config[key] = float(raw)
            else:
                app.config[key] = raw
    if "SERVICES_MAX_CONTENT_LENGTH" in os.environ:
        app.config["MAX_CONTENT_LENGTH"] = int(os.environ["SERVICES_MAX_CONTENT_LENGTH"])
    if "REGISTRY_ENABLED" in os.environ:
        app.config["REGISTRY_ENABLED"] = env_flag(os.environ["REGISTRY_ENABLED"])
    if config:
        app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    init_logging()
    install_error_handlers(app)
    init_body_limit(app)
    init_access_log(app)
    init_tracing(app)
    init_metrics(app)
    init_openapi(app, title, version, description)
    return app
