"""gunicorn config for a Connect-native service: the registry's hooks plus mesh mTLS.

    SERVICE_NAME=web SERVICE_PORT=8443 SERVICE_CONNECT=native \\
      gunicorn -c python:consul_discovery.mesh.gunicorn_conf "myapp:create_app()"

Sync and gthread workers. On top of ``consul_discovery.registry.gunicorn_conf`` (register
once in the master, drain on SIGTERM, deregister), ``on_starting`` refuses a bad
``MESH_*`` setting before gunicorn binds (and sets ``SERVICE_CONNECT=native`` when it is
unset, refusing another value), and each worker:

- ``post_worker_init``: starts a ``MeshService`` (the leaf and CA roots watches, the
  intentions watch), waits until both are in force (``MESH_READY_TIMEOUT``, default
  15 s; a refusal such as a token without ``service:write`` stops the worker at once
  with the permission named, and gunicorn stops), then wraps the app in ``MeshWSGI``
  and has each answer's head sent with its first body bytes, one TLS record
  (``one_record``);
- ``ssl_context``: gunicorn asks for the server context per accepted connection; it
  gets the one in force, so a renewed leaf or rotated roots apply to the next handshake
  with no restart; its sockets give a silent peer ``MESH_IO_TIMEOUT`` seconds (default
  10) to make progress, so a stalled handshake cannot pin a thread or a sync worker;
- ``worker_exit``: stops the watches.

There is no plain-HTTP listener: every request arrives over mTLS and passes the
intentions first. Consul's health check is a TTL check (``SERVICE_CONNECT=native`` makes
it the default): the master reports the instance's ``/health`` as it reads it over mTLS
with the service's own identity (see ``consul_discovery.registry.gunicorn_conf``).
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

from consul_discovery.mesh.errors import MeshConfigError, MeshError
from consul_discovery.mesh.one_record import gather_gunicorn_answers
from consul_discovery.mesh.runtime import MeshService
from consul_discovery.mesh.settings import ready_timeout, server_env
from consul_discovery.mesh.wsgi import MeshWSGI
from consul_discovery.registry import gunicorn_conf as _registry
from consul_discovery.registry.gunicorn_conf import child_exit, on_exit

__all__ = ["child_exit", "on_exit", "on_starting", "post_worker_init", "ssl_context", "when_ready",
           "worker_exit"]  # fmt: skip

log = logging.getLogger("consul_discovery.mesh")

if getattr(_registry, "bind", None) is not None:
    bind = _registry.bind

#: gunicorn turns TLS on only when a certfile is set; ours comes from ``ssl_context``
#: below (the leaf from the agent), never from this file.
certfile = os.devnull

#: Exit status that makes gunicorn's arbiter stop instead of respawning the worker.
_WORKER_BOOT_ERROR = 3

_service: MeshService | None = None  # this worker process's; set once by post_worker_init


def _adopt_logging(gunicorn_log: Any) -> None:
    """Our log lines through gunicorn's error log, at INFO (master and each worker)."""
    for handler in gunicorn_log.error_log.handlers:
        if handler not in log.handlers:
            log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def on_starting(server: Any) -> None:
    """Refuse a bad mesh setting before gunicorn binds (one line, exit 1; SERVICE_CONNECT
    unset means native), then the registry's ``on_starting`` (its own settings checked the
    same way)."""
    try:
        server_env()
    except MeshConfigError as exc:
        server.log.error("mesh: bad configuration: %s", exc)
        raise SystemExit(1) from None
    _registry.on_starting(server)


def when_ready(server: Any) -> None:
    """The registry's ``when_ready`` (register in the master), with our log lines shown."""
    _adopt_logging(server.log)
    _registry.when_ready(server)


def post_worker_init(worker: Any) -> None:
    """Start this worker's mesh identity and guard, then put the guard in front of the app."""
    global _service
    _adopt_logging(worker.log)
    try:
        timeout = ready_timeout()  # checked by on_starting already; named if not
        service = MeshService.from_env().start()
        service.wait_ready(timeout)
    except MeshError as exc:
        worker.log.error("mesh: worker cannot join the mesh: %s", exc)
        raise SystemExit(_WORKER_BOOT_ERROR) from None
    _service = service
    worker.wsgi = MeshWSGI(worker.wsgi, service.guard)
    gather_gunicorn_answers()  # an answer's head and first body bytes: one TLS record
    worker.log.info("mesh: serving mTLS as %s", service.identity.spiffe_id)


def ssl_context(config: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    """The server context in force (gunicorn asks once per accepted connection)."""
    if _service is None:
        raise MeshError("mesh TLS asked for before the worker's identity was ready")
    return _service.identity.server_tls.context()


def worker_exit(server: Any, worker: Any) -> None:
    """Stop this worker's watches."""
    global _service
    service, _service = _service, None
    if service is not None:
        service.close()
