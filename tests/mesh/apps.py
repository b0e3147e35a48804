"""Test apps served Connect-native by tests.harness.connect: Flask (gunicorn) and FastAPI
(uvicorn). Every path answers ``{"served", "service", "pid", "method", "path", "caller"}``:
``caller`` is the SPIFFE ID the mesh put in the request (so a test sees the guard ran),
``served`` counts the requests that reached the app in this process (so a test sees
what did not)."""

from __future__ import annotations

import itertools
import os
from typing import Any

from fastapi import FastAPI, Request
from flask import Flask, jsonify
from flask import request as flask_request

from consul_discovery.mesh import PEER_KEY
from consul_discovery.registry.asgi import ConsulRegistry as AsgiRegistry
from consul_discovery.registry.flask import ConsulRegistry

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]

_served = itertools.count(1)  # requests that reached the app in this process


def _answer(method: str, path: str, caller: Any) -> dict[str, Any]:
    return {
        "served": next(_served),
        "service": os.environ.get("SERVICE_NAME"),
        "pid": os.getpid(),
        "method": method,
        "path": path,
        "caller": str(caller) if caller is not None else None,
    }


def create_app() -> Flask:
    """Flask under gunicorn (consul_discovery.mesh.gunicorn_conf)."""
    app = Flask(__name__)
    ConsulRegistry(app)

    @app.route("/", defaults={"rest": ""}, methods=METHODS)
    @app.route("/<path:rest>", methods=METHODS)
    def anything(rest: str) -> Any:
        environ = flask_request.environ
        return jsonify(_answer(flask_request.method, "/" + rest, environ.get(PEER_KEY)))

    return app


def create_asgi_app() -> FastAPI:
    """FastAPI under python -m consul_discovery.mesh.uvicorn."""
    app = FastAPI()
    AsgiRegistry().init_app(app)

    @app.api_route("/{rest:path}", methods=METHODS)
    async def anything(rest: str, request: Request) -> dict[str, Any]:
        peer = request.scope.get("extensions", {}).get(PEER_KEY)
        return _answer(request.method, "/" + rest, peer)

    return app
