"""Flask adapter: ``/health`` plus self-registration under the dev server.

    registry = ConsulRegistry()
    registry.add_check("db", lambda: db.ping())
    registry.init_app(app)

Every step of the registration's life is ``consul_discovery.registry.lifecycle``'s;
this module only tells it how Flask serves:

* gunicorn: nothing here; the master registers once
  (``consul_discovery.registry.gunicorn_conf``). Without those hooks nothing would
  register, and this says so at startup.
* ``app.run()``: the registrar starts in the serving process (the reloader's child, not
  its watcher) when ``run`` is called, and stops (deregisters) when it returns.
* ``flask run``: the same, started from ``init_app`` in the serving process.
* both: a bad setting, or ``SERVICE_PORT`` other than the port served, stops startup
  with ``registry: bad configuration: <SETTING>: ...``; SIGTERM drains first
  (maintenance, ``SERVICE_DRAIN_SECONDS`` of serving, a second SIGTERM cuts it short),
  then the server stops and the instance is deregistered.
* anything else (tests, scripts): ``/health`` only; call ``start_registrar`` yourself.
"""

from __future__ import annotations

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

from consul_discovery.registry.errors import RegistryConfigError
from consul_discovery.registry.health import CheckFn, HealthChecks, HealthReport
from consul_discovery.registry.lifecycle import (
    MANAGED_BY_ENV,
    Lifecycle,
    Listener,
    Role,
    health_route,
    serving_role,
    show_log,
    startup_error,
    warn_unhooked,
)
from consul_discovery.registry.registrar import Registrar

__all__ = ["MANAGED_BY_ENV", "ConsulRegistry", "under_gunicorn"]

_process_lock = threading.Lock()
_process: Lifecycle | None = None  # guarded by _process_lock; one registration per process


def under_gunicorn(environ: Mapping[str, str] = os.environ) -> bool:
    """True when gunicorn serves this process (its master's hooks do the registering)."""
    return serving_role(environ) is not Role.STANDALONE


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
        # Registration.from_env overrides, e.g. name=...; health_path= is the route's and
        # so the HTTP check's path
        self._overrides = {**overrides, "health_path": health_path}
        if app is not None:
            self.init_app(app)

    @property
    def registrar(self) -> Registrar | None:
        """This process's registrar, if it started one."""
        return _process.registrar if _process is not None else None

    def add_check(self, name: str, fn: CheckFn) -> None:
        """Add a dependency check: ``fn`` returns None/True when fine, raises or False if not
        (TypeError for an ``async def`` one, which nothing here would await, or a non-callable)."""
        self.checks.add(name, fn)

    def health(self) -> HealthReport:
        """Evaluate every check now (what ``/health`` returns and TTL mode reports)."""
        return self.checks.evaluate()

    def init_app(self, app: Flask) -> None:
        """Add the health route and arrange registration for how the app is served."""
        env = os.environ if self._environ is None else self._environ
        path = health_route(env, self._overrides)  # checked before Flask sees it

        def health_view() -> tuple[Response, int]:
            report = self.health()
            return jsonify(report.to_json()), 200 if report.passing else 503

        app.add_url_rule(path, "registry_health", health_view, methods=["GET"])
        app.extensions["consul_registry"] = self
        role = serving_role(env)
        if role is Role.GUNICORN_UNHOOKED:
            warn_unhooked()
        if role is not Role.STANDALONE:
            return
        if env.get("FLASK_RUN_FROM_CLI") == "true":
            if _is_serving_process(app, env):
                self._serve(_flask_run_listener(env))
            return
        _wrap_run(app, self)

    def start_registrar(
        self, bind: tuple[str, int] | None = None, *, option: str = "the server"
    ) -> Registrar:
        """Start this process's single registrar for a server listening on ``bind``.

        Raises ``RegistryConfigError`` for a bad setting, or when an explicit
        ``SERVICE_PORT`` is not ``bind``'s port (``option`` names how it was chosen).
        """
        global _process
        listener = Listener(bind[0], (bind[1],), option) if bind is not None else None
        with _process_lock:
            if _process is None:
                _process = Lifecycle(
                    environ=self._environ, overrides=self._overrides, health=self.health
                )
            lifecycle = _process
        return lifecycle.start(listener)

    def stop_registrar(self) -> None:
        """Deregister and forget this process's registrar (no-op without one)."""
        global _process
        with _process_lock:
            lifecycle, _process = _process, None
        if lifecycle is not None:
            lifecycle.close()

    def _serve(self, listener: Listener) -> None:
        """Start registering for a dev server about to serve ``listener``, or stop it."""
        show_log()
        try:
            self.start_registrar(listener.bind, option=listener.option)
        except RegistryConfigError as exc:
            raise SystemExit(startup_error(exc)) from exc
        _install_sigterm_drain()


def _flask_run_listener(env: Mapping[str, str]) -> Listener:
    """Where ``flask run`` will listen: its own parsed options, else its env, else default."""
    import click

    ctx = click.get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    host = params.get("host") or env.get("FLASK_RUN_HOST") or "127.0.0.1"
    port = params.get("port") or env.get("FLASK_RUN_PORT") or 5000
    return Listener(str(host), (int(port),), "flask run --port")


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
        server_name = str(app.config.get("SERVER_NAME") or "")
        served_port = port or int(server_name.partition(":")[2] or 5000)
        ext._serve(Listener(host or "127.0.0.1", (served_port,), "app.run(port=...)"))
        try:
            return original(host, port, debug, load_dotenv, **options)
        finally:
            ext.stop_registrar()

    app.run = run  # type: ignore[method-assign]


def _install_sigterm_drain() -> None:
    """On SIGTERM: drain, then stop the dev server with a KeyboardInterrupt in the main
    thread (``run``'s finally or ``atexit`` deregisters).

    The interrupt is raised by our own SIGTERM handler, sent again once the drain is
    over, not by a SIGINT: a process whose parent ignores SIGINT (a shell's background
    job, ``nohup``) inherits SIG_IGN, Python then installs no SIGINT handler, and the
    server would drain and go on serving for ever (seen under a backgrounded test run).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    cut_short = threading.Event()  # set by a second SIGTERM
    draining = threading.Event()  # set by the first
    drained = threading.Event()  # set when the drain is over: the next SIGTERM stops

    def stop() -> None:
        drained.set()
        os.kill(os.getpid(), signal.SIGTERM)

    def drain_then_stop() -> None:
        lifecycle = _process
        if lifecycle is None:
            stop()
        else:
            lifecycle.drain_then(stop, cut_short=cut_short)

    def on_term(signum: int, frame: object) -> None:
        if drained.is_set():
            raise KeyboardInterrupt  # in the main thread: the dev server's loop ends
        if draining.is_set():
            cut_short.set()
            return
        draining.set()
        threading.Thread(target=drain_then_stop, name="registry-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
