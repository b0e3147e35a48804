"""Flask integration: ``/health`` plus self-registration under the dev server.

    registry = ConsulRegistry()
    registry.add_check("db", lambda: db.ping())
    registry.init_app(app)

Where registration happens depends on how the app is served:

* gunicorn: nothing here; the master registers once
  (``consul_discovery.registry.gunicorn_conf``). Workers are recognised by the env var
  the master's hooks set, or by gunicorn being loaded.
* ``app.run()``: the registrar starts in the serving process (the reloader's child, not
  its watcher) when ``run`` is called, and stops (deregisters) when it returns. SIGTERM
  drains first: maintenance, ``SERVICE_DRAIN_SECONDS`` of serving, then stop.
* ``flask run``: the same, started from ``init_app`` in the serving process.
* anything else (tests, scripts): ``/health`` only; call ``start_registrar`` yourself.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from consul_discovery.extras import missing

try:
    from flask import Flask, Response, jsonify
except ImportError as exc:
    raise missing(__name__, "flask", exc) from exc

from consul_discovery.registry.config import Registration
from consul_discovery.registry.health import CheckFn, HealthChecks, HealthReport
from consul_discovery.registry.metrics import RegistrarMetrics
from consul_discovery.registry.registrar import Registrar
from consul_discovery.registry.servers import under_gunicorn

log = logging.getLogger("consul_discovery.registry")

_process_lock = threading.Lock()
_process_registrar: Registrar | None = None  # guarded by _process_lock; one per process
_process_metrics: RegistrarMetrics | None = None  # guarded by _process_lock; its gauges


class ConsulRegistry:
    """Flask extension: serves ``/health`` and registers the instance when it serves."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        health_path: str | None = None,
        **overrides: Any,
    ) -> None:
        self.checks = HealthChecks()
        self._environ = environ  # None means os.environ at start time
        self._health_path = health_path
        self._overrides = overrides  # Registration.from_env overrides, e.g. name=...
        if app is not None:
            self.init_app(app)

    @property
    def registrar(self) -> Registrar | None:
        """This process's registrar, if it started one."""
        return _process_registrar

    def add_check(self, name: str, fn: CheckFn) -> None:
        """Add a dependency check: ``fn`` returns None/True when fine, raises or False if not."""
        self.checks.add(name, fn)

    def health(self) -> HealthReport:
        """Evaluate every check now (what ``/health`` returns and TTL mode reports)."""
        return self.checks.evaluate()

    def init_app(self, app: Flask) -> None:
        """Add the health route and arrange registration for how the app is served."""
        env = os.environ if self._environ is None else self._environ
        path = self._health_path or env.get("SERVICE_HEALTH_PATH") or "/health"

        def health_view() -> tuple[Response, int]:
            report = self.health()
            return jsonify(report.to_json()), 200 if report.passing else 503

        app.add_url_rule(path, "registry_health", health_view, methods=["GET"])
        app.extensions["consul_registry"] = self
        if under_gunicorn(env):
            return
        if env.get("FLASK_RUN_FROM_CLI") == "true":
            if _is_serving_process(app, env):
                host = env.get("FLASK_RUN_HOST", "127.0.0.1")
                self.start_registrar(bind=(host, int(env.get("FLASK_RUN_PORT", "5000"))))
                atexit.register(self.stop_registrar)
                _install_sigterm_drain(self)
            return
        _wrap_run(app, self)

    def start_registrar(self, bind: tuple[str, int] | None = None) -> Registrar:
        """Build the Registration from env and start this process's single registrar."""
        global _process_registrar, _process_metrics
        with _process_lock:
            if _process_registrar is not None:
                return _process_registrar
            registration = Registration.from_env(self._environ, bind=bind, **self._overrides)
            _process_registrar = Registrar(registration, health=self.health).start()
            _process_metrics = RegistrarMetrics(_process_registrar).start()
            return _process_registrar

    def stop_registrar(self) -> None:
        """Deregister and forget this process's registrar (no-op without one)."""
        global _process_registrar, _process_metrics
        with _process_lock:
            registrar, _process_registrar = _process_registrar, None
            metrics, _process_metrics = _process_metrics, None
        if registrar is not None:
            registrar.stop()
        if metrics is not None:
            metrics.publish()
            metrics.stop()


def _is_serving_process(app: Flask, env: Mapping[str, str]) -> bool:
    if env.get("WERKZEUG_RUN_MAIN") == "true":
        return True  # the reloader's child: it serves
    argv = sys.argv[1:]
    reloader = "--reload" in argv or (
        "--no-reload" not in argv and (app.debug or "--debug" in argv)
    )
    return not reloader


def _wrap_run(app: Flask, ext: ConsulRegistry) -> None:
    original: Callable[..., None] = app.run

    def run(
        host: str | None = None,
        port: int | None = None,
        debug: bool | None = None,
        load_dotenv: bool = True,
        **options: Any,
    ) -> None:
        reloader = options.get("use_reloader", debug if debug is not None else app.debug)
        serving = not reloader or os.environ.get("WERKZEUG_RUN_MAIN") == "true"
        if not serving:
            return original(host, port, debug, load_dotenv, **options)
        ext.start_registrar(bind=(host or "127.0.0.1", port or 5000))
        _install_sigterm_drain(ext)
        try:
            return original(host, port, debug, load_dotenv, **options)
        finally:
            ext.stop_registrar()

    app.run = run  # type: ignore[method-assign]


def _install_sigterm_drain(ext: ConsulRegistry) -> None:
    """On SIGTERM: maintenance and keep serving for the drain delay, then SIGINT ourselves
    (the dev server stops on KeyboardInterrupt; ``run``'s finally deregisters)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def drain_then_interrupt() -> None:
        registrar = ext.registrar
        if registrar is not None:
            registrar.drain()
        os.kill(os.getpid(), signal.SIGINT)

    def on_term(signum: int, frame: object) -> None:
        threading.Thread(target=drain_then_interrupt, name="registry-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
