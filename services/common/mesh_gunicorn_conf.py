"""gunicorn config for the platform's Flask services in the mesh (``MESH=1``).

    SERVICE_CONNECT=native gunicorn -c python:services.common.mesh_gunicorn_conf \\
        "services.user_service:create_app()"

``consul_discovery.mesh.gunicorn_conf`` (the registry's hooks; each worker serves mTLS
with the service's leaf and puts the intentions guard in front of the app; the master
feeds the TTL check from ``/health`` read over mTLS) plus what
``services.common.gunicorn_conf`` adds: the requests gunicorn refuses itself answered in
the platform's JSON error shape (``services.common.server_errors``). A denied caller
gets the mesh's own JSON 403 (``{"error": "forbidden", "caller": ...}``).
"""

from __future__ import annotations

from consul_discovery.mesh import gunicorn_conf as _mesh
from consul_discovery.mesh.gunicorn_conf import (  # noqa: F401  (gunicorn reads them here)
    certfile,
    child_exit,
    on_exit,
    on_starting,
    post_worker_init,
    ssl_context,
    when_ready,
    worker_exit,
)
from services.common.server_errors import install_gunicorn_json_errors

if getattr(_mesh, "bind", None) is not None:
    bind = _mesh.bind

install_gunicorn_json_errors()
