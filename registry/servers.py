"""Which server runs this process: the one decision the Flask, ASGI and gunicorn parts share.

It imports no web framework, so the ASGI integration never loads Flask.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

#: Set by consul_discovery.registry.gunicorn_conf in the master; workers inherit it and stay quiet.
MANAGED_BY_ENV = "REGISTRY_MANAGED_BY"


def under_gunicorn(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside a gunicorn worker (whose master does the registering)."""
    return environ.get(MANAGED_BY_ENV) == "gunicorn" or "gunicorn.arbiter" in sys.modules
