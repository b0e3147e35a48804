"""A small Flask app for registry tests, steerable from the test through a control file.

HEALTH_CONTROL names a file whose content sets /health: "ok" (or missing file),
"fail", or "alternate" (pass, fail, pass, ... one answer each, per process).
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from flask import Flask, jsonify, request

from consul_discovery.registry.flask import ConsulRegistry


def create_app() -> Flask:
    """The test service: /hello, /slow?s=N, /health (via the registry extension), /stats."""
    app = Flask(__name__)
    registry = ConsulRegistry(app)
    answers = itertools.count()
    stats = {"health_failures": 0}

    def control() -> bool:
        path = os.environ.get("HEALTH_CONTROL")
        mode = Path(path).read_text().strip() if path and Path(path).exists() else "ok"
        if mode == "fail" or (mode == "alternate" and next(answers) % 2 == 1):
            stats["health_failures"] += 1
            raise RuntimeError(f"forced failure ({mode})")
        return True

    registry.add_check("control", control)

    @app.get("/hello")
    def hello():  # type: ignore[no-untyped-def]
        return jsonify(pid=os.getpid(), service_id=os.environ.get("SERVICE_ID"))

    @app.get("/slow")
    def slow():  # type: ignore[no-untyped-def]
        time.sleep(float(request.args.get("s", "1")))
        return jsonify(done=True)

    @app.get("/stats")
    def get_stats():  # type: ignore[no-untyped-def]
        return jsonify(stats)

    return app
