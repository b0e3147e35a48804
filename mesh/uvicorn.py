"""Serve an ASGI app in the mesh under uvicorn: mTLS with the leaf, intentions first.

    SERVICE_NAME=inventory SERVICE_CONNECT=native \\
      python -m consul_discovery.mesh.uvicorn --factory myapp:create_app --port 8443

or ``consul_discovery.mesh.uvicorn.serve(app, host=..., port=...)``. Before uvicorn
binds, the service's ``MeshService`` starts and waits until its leaf, CA roots and
intentions are in force. uvicorn then serves with:

- ``ssl``: the ``ServerTLS.front_context()``, whose handshakes run on the context in
  force (a renewed leaf or rotated roots apply to the next connection, no restart);
- ``http``: uvicorn's protocol class (h11 or httptools) with ``asgi.PeerProtocol``
  mixed in, so each request's scope carries the caller's identity;
- the app wrapped in ``MeshASGI`` (the shared ``Guard``) outermost.

The app's lifespan runs as usual, so ``consul_discovery.registry.asgi.ConsulRegistry``
registers (Connect-native, with a TTL check fed by the app's own checks in-process: no
other path to the app) and drains on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from consul_discovery.extras import missing

try:
    import uvicorn
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import ImportFromStringError, import_from_string
except ImportError as exc:
    raise missing(__name__, "uvicorn", exc) from exc

from consul_discovery.connection.cli_arguments import port_number, positive_seconds
from consul_discovery.mesh import settings
from consul_discovery.mesh.asgi import MeshASGI, mesh_protocol
from consul_discovery.mesh.errors import MeshConfigError, MeshError
from consul_discovery.mesh.runtime import MeshService

log = logging.getLogger("consul_discovery.mesh")


def mesh_config(app: Any, **uvicorn_kwargs: Any) -> uvicorn.Config:
    """A uvicorn Config for ``app`` whose HTTP protocol puts the TLS peer in the scope."""
    http = uvicorn_kwargs.pop("http", "auto")
    try:
        base = import_from_string(HTTP_PROTOCOLS.get(http, http)) if isinstance(http, str) else http
    except (ImportError, ImportFromStringError) as exc:  # e.g. httptools not installed
        raise MeshConfigError("--http", f"{http!r} cannot be loaded: {exc}") from None
    return uvicorn.Config(app, http=mesh_protocol(base), **uvicorn_kwargs)


def apply_mesh(config: uvicorn.Config, service: MeshService) -> None:
    """Load ``config`` and put the mesh in front: the guard outermost, the rotating TLS."""
    config.load()
    config.loaded_app = MeshASGI(config.loaded_app, service.guard)
    config.ssl = service.identity.server_tls.front_context()


def _adopt_logging() -> None:
    """Our log lines through the handlers of uvicorn's error log, at its level."""
    error_log = logging.getLogger("uvicorn.error")
    source: logging.Logger | None = error_log
    while source is not None and not source.handlers:  # uvicorn.error propagates to uvicorn
        source = source.parent if source.propagate else None
    if source is None or source.parent is None:
        return  # no handlers of uvicorn's own: leave ours to the root logger
    for handler in source.handlers:
        if handler not in log.handlers:
            log.addHandler(handler)
    log.setLevel(error_log.getEffectiveLevel())
    log.propagate = False


def serve(app: Any, *, ready_timeout: float | None = None, **uvicorn_kwargs: Any) -> None:
    """Run uvicorn with ``app`` in the mesh until it stops (settings from the environment;
    ``ready_timeout`` defaults to ``MESH_READY_TIMEOUT``, 15 s)."""
    config = mesh_config(app, **uvicorn_kwargs)  # sets up uvicorn's logging
    _adopt_logging()
    settings.server_env()  # SERVICE_CONNECT=native unless set (then refused if not native)
    service = MeshService.from_env().start()  # a bad MESH_* setting is refused here, named
    try:
        service.wait_ready(settings.ready_timeout() if ready_timeout is None else ready_timeout)
        apply_mesh(config, service)
        log.info("mesh: serving mTLS as %s", service.identity.spiffe_id)
        uvicorn.Server(config).run()
    finally:
        service.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m consul_discovery.mesh.uvicorn APP [--factory] [--host H] [--port P]``,
    and the uvicorn options a service usually sets: ``--http``, ``--log-level``,
    ``--timeout-graceful-shutdown``, ``--timeout-keep-alive``, ``--no-server-header``,
    ``--no-access-log``."""
    parser = argparse.ArgumentParser(prog="python -m consul_discovery.mesh.uvicorn")
    parser.add_argument("app", help="module:attribute of the ASGI app (or factory)")
    parser.add_argument("--factory", action="store_true", help="APP is a factory to call")
    parser.add_argument("--host", default=os.environ.get("SERVICE_ADDRESS") or "127.0.0.1")
    parser.add_argument(
        "--port", type=port_number, default=None, help="default: SERVICE_PORT, else 0"
    )
    parser.add_argument(
        "--http",
        default="auto",
        help="uvicorn HTTP protocol: auto, h11, httptools, or module:Class of your own "
        "(the mesh's peer mixin goes on top of it)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--ready-timeout", type=positive_seconds, default=None,
        help="default: MESH_READY_TIMEOUT, 15",
    )  # fmt: skip
    parser.add_argument("--timeout-graceful-shutdown", type=positive_seconds, default=None)
    parser.add_argument("--timeout-keep-alive", type=positive_seconds, default=5)
    parser.add_argument("--no-server-header", action="store_true")
    parser.add_argument(
        "--no-access-log", action="store_true", help="the app logs its own requests"
    )
    args = parser.parse_args(argv)
    try:
        port = args.port if args.port is not None else _env_port()
        serve(
            args.app,
            factory=args.factory,
            host=args.host,
            port=port,
            http=args.http,
            log_level=args.log_level,
            ready_timeout=args.ready_timeout,
            timeout_graceful_shutdown=args.timeout_graceful_shutdown,
            timeout_keep_alive=args.timeout_keep_alive,
            server_header=not args.no_server_header,
            access_log=not args.no_access_log,
        )
    except MeshError as exc:
        print(f"mesh: cannot serve in the mesh: {exc}", file=sys.stderr)
        return 3
    return 0


def _env_port() -> int:
    """``SERVICE_PORT`` (unset: 0), or MeshConfigError naming it."""
    raw = os.environ.get("SERVICE_PORT", "").strip()
    try:
        return port_number(raw) if raw else 0
    except argparse.ArgumentTypeError as exc:
        raise MeshConfigError("SERVICE_PORT", str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
