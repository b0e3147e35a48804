"""``/health`` and self-registration for a service, through ``consul_discovery.registry.flask``.

Normally the registry's Flask extension provides ``/health`` (200/503 JSON from the
checks added here) and registers the instance with Consul when served by ``app.run`` or
``flask run`` (under gunicorn the master registers; in tests and scripts it only serves
``/health``). With ``REGISTRY_ENABLED = False`` the app serves the same ``/health``
from the registry's ``HealthChecks`` itself and can never register, whatever serves it.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, jsonify

from consul_discovery.registry.health import CheckFn, HealthChecks


def _init_local_health(app: Flask, checks: Mapping[str, CheckFn]) -> None:
    health_checks = HealthChecks()
    for name, check in checks.items():
        health_checks.add(name, check)

    def health() -> tuple[Response, int]:
        report = health_checks.evaluate()
        return jsonify(report.to_json()), 200 if report.passing else 503

    app.add_url_rule("/health", "health", health, methods=["GET"])


def init_health(app: Flask, checks: Mapping[str, CheckFn]) -> None:
    """Serve ``/health`` from ``checks`` and register through the registry extension."""
    if not app.config.get("REGISTRY_ENABLED", True):
        _init_local_health(app, checks)
        return
    from consul_discovery.registry.flask import ConsulRegistry

    ext = ConsulRegistry()
    for name, check in checks.items():
        ext.add_check(name, check)
    ext.init_app(app)
    app.extensions["service_registry"] = ext
