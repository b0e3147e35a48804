"""``/health`` and self-registration for a service, through ``registry.flask``.

Normally the registry's Flask extension provides ``/health`` (200/503 JSON from the
checks added here) and registers the instance with Consul when run under the Flask dev
server (under gunicorn the master registers). With ``REGISTRY_ENABLED = False`` (tests,
or running without Consul) the app serves an equivalent ``/health`` itself and never
talks to Consul.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, jsonify

from services.common.openapi import operation

HealthCheck = Callable[[], Any]

HEALTH_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["passing", "critical"]},
        "checks": {"type": "object"},
    },
}


def run_checks(checks: Mapping[str, HealthCheck]) -> tuple[bool, dict[str, dict[str, str]]]:
    """Run each check; a check passes unless it raises or returns False."""
    results: dict[str, dict[str, str]] = {}
    healthy = True
    for name, check in checks.items():
        try:
            ok = check() is not False
            detail = "ok" if ok else "check returned False"
        except Exception as exc:  # a failing dependency is a result, not an error
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        healthy = healthy and ok
        results[name] = {"status": "passing" if ok else "critical", "output": detail}
    return healthy, results


def _init_local_health(app: Flask, checks: Mapping[str, HealthCheck]) -> None:
    @operation(
        "Instance health: 200 when every dependency is reachable, else 503",
        responses={200: "Healthy", 503: "A dependency failed"},
        response_schema=HEALTH_RESPONSE_SCHEMA,
    )
    def health() -> tuple[Response, int]:
        healthy, results = run_checks(checks)
        body = {"status": "passing" if healthy else "critical", "checks": results}
        return jsonify(body), 200 if healthy else 503

    app.add_url_rule("/health", "health", health, methods=["GET"])


def init_health(app: Flask, checks: Mapping[str, HealthCheck]) -> None:
    """Serve ``/health`` from ``checks`` and register through the registry extension."""
    if not app.config.get("REGISTRY_ENABLED", True):
        _init_local_health(app, checks)
        return
    try:
        from registry.flask import ConsulRegistry
    except ImportError as exc:
        raise RuntimeError(
            "registry.flask is not importable; install the project (make venv) or set "
            "REGISTRY_ENABLED=False to run without Consul"
        ) from exc
    ext = ConsulRegistry()
    ext.init_app(app)
    for name, check in checks.items():
        ext.add_check(name, check)
    app.extensions["service_registry"] = ext
