"""Running one service on the Flask dev server (registers through ``registry.flask``).

    SERVICE_PORT=5001 python -m services.user_service [--host 127.0.0.1] [--port 5001]

For development only; the cluster serves every Flask service with gunicorn and
``services.common.gunicorn_conf`` (the registry's hooks and JSON error pages).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

from flask import Flask


def run(create_app: Callable[[], Flask], name: str, argv: Sequence[str] | None = None) -> None:
    """Parse ``--host``/``--port`` (defaults from SERVICE_ADDRESS/SERVICE_PORT) and serve."""
    parser = argparse.ArgumentParser(prog=f"python -m {name}", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("SERVICE_ADDRESS", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SERVICE_PORT", "5000")))
    args = parser.parse_args(argv)
    os.environ.setdefault("SERVICE_PORT", str(args.port))
    create_app().run(host=args.host, port=args.port, threaded=True, use_reloader=False)
