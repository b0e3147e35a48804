"""gunicorn adapter: register once in the master, drain on SIGTERM, deregister on exit.

    gunicorn -c python:consul_discovery.registry.gunicorn_conf "services.user_service:create_app()"

or reuse the hooks from a service's own config::

    from consul_discovery.registry.gunicorn_conf import on_starting, when_ready, child_exit, on_exit

The bind address comes from SERVICE_ADDRESS (default 127.0.0.1) and SERVICE_PORT
unless ``-b`` is given. Every step is ``consul_discovery.registry.lifecycle``'s; the
hooks, all in the master process, only say when:

* ``on_starting``: marks the environment so the app-side adapters (workers, and the
  master under ``--preload``) stay quiet, shows the registry's lines in gunicorn's error
  log, checks the settings and that an explicit SERVICE_PORT is a port gunicorn binds
  (``-b``), so bad config stops gunicorn before it binds, with ``registry: bad
  configuration: <SETTING>: ...``; empties ``PROMETHEUS_MULTIPROC_DIR`` (one per
  instance) of a previous run's metric files.
* ``when_ready``: starts registering the real listening socket (and the gauges);
  wraps ``server.handle_term`` for the drain; starts the discovery relay, so the
  workers share one watch per target (``consul_discovery.client.relay``; off with
  ``DISCOVERY_SHARED_WATCHES=false``).
* ``child_exit``: drops a dead worker's live gauges (its counters stay, so a worker
  restart neither resets nor doubles them).
* SIGTERM (gunicorn's own handler would stop workers at once): maintenance, keep
  serving (and managing workers) for SERVICE_DRAIN_SECONDS (a SIGINT/SIGQUIT cuts it
  short), then gunicorn's graceful stop (in-flight requests finish within
  ``graceful_timeout``), after which ``on_exit`` deregisters.
* TTL mode: the master has no app loaded, so it probes its own ``/health`` over
  loopback every TTL/3 and reports that verdict.

gunicorn logs its settings at DEBUG as it starts, ``raw_env`` among them; a token
passed as ``-e CONSUL_HTTP_TOKEN=...`` would be in that line, so this module, loaded
before, shows the names of ``raw_env`` only.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import signal
import threading
from typing import Any, NoReturn

from consul_discovery.connection.addresses import host_port
from consul_discovery.registry.errors import RegistryConfigError
from consul_discovery.registry.lifecycle import (
    MANAGED_BY_ENV,
    Lifecycle,
    Listener,
    show_log,
    start_shared_watches,
    startup_error,
)

log = logging.getLogger("consul_discovery.registry")

_SETTINGS_DUMP = "Current configuration:"  # gunicorn's arbiter, at DEBUG
_RAW_ENV_LINE = re.compile(r"^(  raw_env: )(.*)$", re.MULTILINE)


def _names_only(line: re.Match[str]) -> str:
    """A ``raw_env`` line of gunicorn's settings dump with each value left out."""
    try:
        entries = ast.literal_eval(line.group(2))
        names = [str(entry).partition("=")[0] for entry in entries]
    except (ValueError, SyntaxError, TypeError):  # not the list gunicorn prints
        return f"{line.group(1)}<not shown>"
    return f"{line.group(1)}{[f'{name}=<not shown>' for name in names]}"


class RawEnvRedactor(logging.Filter):
    """Leaves the values of ``raw_env`` (``-e KEY=VALUE``: a token, maybe) out of the
    settings gunicorn logs at DEBUG; every other record passes untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the settings dump's ``raw_env`` line; keep every record."""
        message = record.msg
        if isinstance(message, str) and message.startswith(_SETTINGS_DUMP):
            record.msg = _RAW_ENV_LINE.sub(_names_only, message)
        return True


logging.getLogger("gunicorn.error").addFilter(RawEnvRedactor())
_lifecycle = Lifecycle()  # master process only: this instance's registration
_relay: Any = None  # master process only: the discovery relay (when_ready, on_exit)


def _env_bind() -> list[str] | None:
    """gunicorn's ``bind`` from SERVICE_ADDRESS/SERVICE_PORT; None when the port is not a
    port (``on_starting`` then reports it, naming SERVICE_PORT)."""
    port = os.environ.get("SERVICE_PORT", "").strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = os.environ.get("SERVICE_ADDRESS", "").strip() or "127.0.0.1"
    return [host_port(host, int(port))]


_bind = _env_bind()
if _bind is not None:
    bind = _bind


def _bound_listener(server: Any) -> Listener:
    """The master's real listening sockets (after binding)."""
    host, ports, unix = None, [], False
    for listener in getattr(server, "LISTENERS", []):
        name = listener.sock.getsockname()
        if isinstance(name, tuple):
            host = host or str(name[0])
            ports.append(int(name[1]))
        else:
            unix = True
    return Listener(host, tuple(ports), "gunicorn -b", unix=unix and not ports)


def _configured_listener(server: Any) -> Listener:
    """What gunicorn is about to bind (``-b``/``bind``; port 0: a free one)."""
    host, ports, unix = None, [], False
    for address in server.cfg.address:
        if isinstance(address, tuple):
            host = host or str(address[0])
            ports.append(int(address[1]))
        elif isinstance(address, str | bytes):  # -b unix:/path
            unix = True
    return Listener(host, tuple(ports), "gunicorn -b", unix=unix and not ports)


def _fail(server: Any, exc: RegistryConfigError) -> NoReturn:
    """Say the one line in gunicorn's error log and exit 1 (a SystemExit carrying the
    line would have Python print it a second time, bare)."""
    server.log.error(startup_error(exc))
    raise SystemExit(1) from exc


def on_starting(server: Any) -> None:
    """Mark the env for the app side, show our log lines, check the settings early."""
    os.environ[MANAGED_BY_ENV] = "gunicorn"
    show_log(server.log.error_log.handlers)
    try:
        _lifecycle.check(_configured_listener(server))
    except RegistryConfigError as exc:
        _fail(server, exc)
    try:
        from consul_discovery.registry.metrics import clean_multiprocess_dir
    except ImportError:  # no prometheus_client: no multiprocess metric files either
        return
    clean_multiprocess_dir()


def when_ready(server: Any) -> None:
    """Start this instance's registrar (once, in the master) and hook SIGTERM for draining."""
    global _relay
    try:
        _lifecycle.start(_bound_listener(server))
    except RegistryConfigError as exc:
        _fail(server, exc)
    _wrap_handle_term(server)
    if _relay is None:
        _relay = start_shared_watches()


def child_exit(server: Any, worker: Any) -> None:
    """A worker died (or was restarted): drop its live gauges, keep its counters."""
    try:
        from consul_discovery.registry.metrics import mark_worker_dead
    except ImportError:
        return
    mark_worker_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Deregister (after gunicorn has let the workers finish); stop the relay.

    During a binary upgrade (``kill -USR2``) the old and the new master register the
    same instance (same id, same port): the one that stops while the other serves
    leaves the registration to it.
    """
    other = _other_master(server)
    if other is not None:
        log.info("registry: gunicorn master %d serves the instance on: left registered", other)
    _lifecycle.close(deregister=other is None)
    if _relay is not None:
        _relay.close()


def _other_master(server: Any) -> int | None:
    """The other live master of a binary upgrade (USR2) serving this instance: in the old
    master the new one (``reexec_pid``), in a new master not yet promoted the old one
    (``master_pid``); None when this master serves alone."""
    for pid in (getattr(server, "reexec_pid", 0), getattr(server, "master_pid", 0)):
        if isinstance(pid, int) and pid > 0:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass  # alive, another user's
            return pid
    return None


def _wrap_handle_term(server: Any) -> None:
    original = server.handle_term
    if getattr(original, "_registry_drain", False):
        return
    cut_signals = {signal.SIGINT, signal.SIGQUIT}

    def handle_term() -> None:
        """Maintenance, keep serving for the drain delay, then gunicorn's graceful stop."""
        other = _other_master(server)
        if other is not None:  # the instance goes on in the other master: nothing to drain
            log.info("registry: SIGTERM: gunicorn master %d serves the instance on", other)
            original()
            return
        cut_short = threading.Event()

        def tick() -> None:
            if cut_signals.intersection(server.SIG_QUEUE):
                cut_short.set()
            server.murder_workers()
            server.manage_workers()  # keep serving at full strength while draining

        _lifecycle.drain_then(original, cut_short=cut_short, tick=tick)

    handle_term._registry_drain = True  # type: ignore[attr-defined]
    server.handle_term = handle_term
