"""Serve the platform's ASGI service in the mesh, with the platform's uvicorn settings.

    SERVICE_NAME=inventory-service SERVICE_CONNECT=native python -m services.common.mesh_uvicorn \\
        --factory services.inventory_service:create_app --host 127.0.0.1 --port 8401 \\
        --http services.common.server_errors:JsonErrorH11Protocol \\
        --timeout-graceful-shutdown 10 --no-server-header --timeout-keep-alive 75

``consul_discovery.mesh.uvicorn.serve`` (mTLS with the service's leaf, the intentions
guard in front, the caller's identity in the scope) taking the same options the plain
cluster gives uvicorn (``services.cluster.supervisor_conf.instance_command``), which the
mesh's own ``python -m consul_discovery.mesh.uvicorn`` does not: a graceful-shutdown
bound, no ``Server`` header, and idle connections kept past any caller's reuse gap. The
``--http`` protocol (the JSON 400s) gets the mesh's peer mixin on top, so both hold.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from consul_discovery.mesh.errors import MeshError
from consul_discovery.mesh.uvicorn import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse uvicorn's options used by the cluster and serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m services.common.mesh_uvicorn")
    parser.add_argument("app", help="module:attribute of the ASGI app (or factory)")
    parser.add_argument("--factory", action="store_true", help="APP is a factory to call")
    parser.add_argument("--host", default=os.environ.get("SERVICE_ADDRESS") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SERVICE_PORT") or 0))
    parser.add_argument("--http", default="auto", help="uvicorn HTTP protocol class")
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=None)
    parser.add_argument("--timeout-keep-alive", type=int, default=5)
    parser.add_argument("--no-server-header", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    try:
        serve(
            args.app,
            factory=args.factory,
            host=args.host,
            port=args.port,
            http=args.http,
            timeout_graceful_shutdown=args.timeout_graceful_shutdown,
            timeout_keep_alive=args.timeout_keep_alive,
            server_header=not args.no_server_header,
            ready_timeout=args.ready_timeout,
        )
    except MeshError as exc:
        print(f"mesh: cannot serve in the mesh: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
