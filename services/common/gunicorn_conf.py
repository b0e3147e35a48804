"""gunicorn config for the platform's Flask services: the registry's hooks, JSON error pages.

    gunicorn -c python:services.common.gunicorn_conf "services.user_service:create_app()"

Everything ``consul_discovery.registry.gunicorn_conf`` does (register once in the master,
drain on SIGTERM, deregister on exit, bind from SERVICE_ADDRESS/SERVICE_PORT), and the
requests gunicorn refuses itself (bad request line, header, ``Content-Length``, headers
too large) answered in the platform's JSON error shape instead of gunicorn's HTML page
(``services.common.server_errors``). Loaded in the master, so every worker forked from
it answers that way.
"""

from __future__ import annotations

from consul_discovery.registry import gunicorn_conf as _registry
from consul_discovery.registry.gunicorn_conf import (  # noqa: F401  (gunicorn reads them here)
    child_exit,
    on_exit,
    on_starting,
    when_ready,
)
from services.common.server_errors import install_gunicorn_json_errors

if getattr(_registry, "bind", None) is not None:
    bind = _registry.bind

install_gunicorn_json_errors()
