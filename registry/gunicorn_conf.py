"""gunicorn config: register once in the master, drain on SIGTERM, deregister on exit.

    gunicorn -c python:consul_discovery.registry.gunicorn_conf "services.user_service:create_app()"

or reuse the hooks from a service's own config::

    from consul_discovery.registry.gunicorn_conf import on_starting, when_ready, child_exit, on_exit

The bind address comes from SERVICE_ADDRESS (default 127.0.0.1) and SERVICE_PORT
unless ``-b`` is given. Hooks, all in the master process:

* ``on_starting``: marks the environment so workers' Flask extension stays quiet,
  validates the settings (bad config stops gunicorn before it binds) and empties
  ``PROMETHEUS_MULTIPROC_DIR`` (one per instance) of a previous run's metric files.
* ``when_ready``: builds the Registration from env and the real listening socket and
  starts the Registrar thread and the thread publishing its state as gauges
  (``consul_discovery.registry.metrics``); wraps ``server.handle_term`` for the drain.
* ``child_exit``: drops a dead worker's live gauges (its counters stay, so a worker
  restart neither resets nor doubles them).
* SIGTERM (gunicorn's own handler would stop workers at once): put the instance in
  maintenance, keep serving for SERVICE_DRAIN_SECONDS (a second SIGINT/SIGQUIT cuts it
  short), then hand over to gunicorn's graceful stop (in-flight requests finish within
  ``graceful_timeout``), after which ``on_exit`` deregisters.
* TTL mode: the master has no app loaded, so it probes its own ``/health`` over
  loopback every TTL/3 and reports that verdict.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, NoReturn

from consul_discovery.connection.addresses import host_port, http_url
from consul_discovery.registry.checks import TtlCheck
from consul_discovery.registry.config import Registration
from consul_discovery.registry.errors import RegistryConfigError
from consul_discovery.registry.flask import MANAGED_BY_ENV
from consul_discovery.registry.health import http_probe
from consul_discovery.registry.metrics import (
    RegistrarMetrics,
    clean_multiprocess_dir,
    mark_worker_dead,
)
from consul_discovery.registry.registrar import Registrar

log = logging.getLogger("consul_discovery.registry")

_registrar: Registrar | None = None  # master process only; set by when_ready, read by hooks
_metrics: RegistrarMetrics | None = None  # master process only; set once by when_ready


def _env_bind() -> list[str] | None:
    port = os.environ.get("SERVICE_PORT", "").strip()
    if not port:
        return None
    host = os.environ.get("SERVICE_ADDRESS", "").strip() or "127.0.0.1"
    return [host_port(host, int(port)) if port.isdigit() else f"{host}:{port}"]


_bind = _env_bind()
if _bind is not None:
    bind = _bind


def _listener_address(server: Any) -> tuple[str, int] | None:
    for listener in getattr(server, "LISTENERS", []):
        name = listener.sock.getsockname()
        if isinstance(name, tuple):
            return str(name[0]), int(name[1])
    return None


def _config_bind(server: Any) -> tuple[str, int] | None:
    for address in server.cfg.address:
        if isinstance(address, tuple):
            return str(address[0]), int(address[1])
    return None


def _fail(server: Any, exc: RegistryConfigError) -> NoReturn:
    server.log.error("registry: bad configuration: %s", exc)
    raise SystemExit(f"registry: bad configuration: {exc}") from exc


def on_starting(server: Any) -> None:
    """Mark the env for workers and validate the registration settings early."""
    os.environ[MANAGED_BY_ENV] = "gunicorn"
    bind = _config_bind(server)
    if bind is not None and bind[1] == 0:
        bind = (bind[0], 1)  # an ephemeral port: the real one is known in when_ready
    try:
        Registration.from_env(bind=bind)
    except RegistryConfigError as exc:
        _fail(server, exc)
    clean_multiprocess_dir()


def when_ready(server: Any) -> None:
    """Start this instance's registrar (once, in the master) and hook SIGTERM for draining."""
    global _registrar, _metrics
    registry_log = logging.getLogger("consul_discovery.registry")
    for handler in server.log.error_log.handlers:
        if handler not in registry_log.handlers:
            registry_log.addHandler(handler)
    registry_log.setLevel(logging.INFO)
    bind = _listener_address(server)
    try:
        registration = Registration.from_env(bind=bind)
    except RegistryConfigError as exc:
        _fail(server, exc)
    health = None
    if isinstance(registration.check, TtlCheck):
        host = bind[0] if bind and bind[0] not in ("0.0.0.0", "::") else "127.0.0.1"
        path = os.environ.get("SERVICE_HEALTH_PATH", "").strip() or "/health"
        url, session = http_url(host, registration.port) + path, None
        if registration.connect_native:  # mTLS only: probe as the service itself
            from consul_discovery.mesh.clients import self_probe_session
            from consul_discovery.mesh.service_identity import ServiceIdentity

            identity = ServiceIdentity(registration.name, registration.consul).start()
            session = self_probe_session(registration.name, identity)
            url = "https" + url.removeprefix("http")
        health = http_probe(url, timeout=min(2.0, registration.check.heartbeat), session=session)
    if _registrar is None:
        _registrar = Registrar(registration, health=health).start()
    if _metrics is None:
        _metrics = RegistrarMetrics(_registrar).start()
    _wrap_handle_term(server, _registrar)


def child_exit(server: Any, worker: Any) -> None:
    """A worker died (or was restarted): drop its live gauges, keep its counters."""
    mark_worker_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Deregister (after gunicorn has let the workers finish)."""
    global _registrar, _metrics
    registrar, _registrar = _registrar, None
    if registrar is not None:
        registrar.stop()
    metrics, _metrics = _metrics, None
    if metrics is not None:
        metrics.stop()


def _wrap_handle_term(server: Any, registrar: Registrar) -> None:
    original = server.handle_term
    if getattr(original, "_registry_drain", False):
        return
    cut_short = {signal.SIGINT, signal.SIGQUIT}

    def handle_term() -> None:
        """Maintenance, keep serving for the drain delay, then gunicorn's graceful stop."""
        delay = registrar.registration.drain_seconds
        server.log.info("registry: SIGTERM: draining for %.1fs before stopping", delay)
        registrar.begin_drain()
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if cut_short.intersection(server.SIG_QUEUE):
                server.log.info("registry: drain cut short by a second signal")
                break
            time.sleep(min(remaining, 0.1))
            server.murder_workers()
            server.manage_workers()  # keep serving at full strength while draining
        original()

    handle_term._registry_drain = True  # type: ignore[attr-defined]
    server.handle_term = handle_term
