"""A Flask app whose ``FLAG`` follows Consul KV (``config/<PRELOAD_SERVICE>/flag``), for
serving under ``gunicorn --preload``: the client starts in the master, before the fork."""

from __future__ import annotations

import os

from flask import Flask, jsonify

from consul_discovery.config import ConfigClient, Layers
from consul_discovery.config.flask import ConsulConfig


def create_app() -> Flask:
    """GET /flag answers the worker's pid and its current ``FLAG``."""
    app = Flask(__name__)
    app.config["FLAG"] = "default"
    client = ConfigClient(Layers(os.environ["PRELOAD_SERVICE"]))  # CONSUL_HTTP_ADDR
    ConsulConfig(app, client, bind={"flag": "FLAG"})

    @app.get("/flag")
    def flag():  # type: ignore[no-untyped-def]
        return jsonify(pid=os.getpid(), flag=app.config["FLAG"])

    return app
