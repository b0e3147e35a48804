"""Orders: a Flask service, served by gunicorn, that calls the stock service by name.

pip install 'consul-discovery[flask,gunicorn]'
export SERVICE_NAME=orders SERVICE_PORT=8001
gunicorn -c python:consul_discovery.registry.gunicorn_conf -w 2 "services.orders:create_app()"
"""

import atexit
import os

from flask import Flask, jsonify

from consul_discovery.client import ServiceClient
from consul_discovery.registry.flask import ConsulRegistry


def create_app() -> Flask:
    app = Flask(__name__)
    ConsulRegistry(app)  # GET /health; gunicorn's master registers and drains on SIGTERM
    # One client per worker: gunicorn builds the app in each worker, after the fork.
    # Consul's address comes from CONSUL_HTTP_ADDR (default 127.0.0.1:8500).
    client = ServiceClient()
    atexit.register(client.close)  # the worker closes it when it exits
    client_pid = os.getpid()

    @app.get("/orders/<item>")
    def order(item: str):
        stock = client.get("stock", f"/stock/{item}")  # any passing stock instance
        stock.raise_for_status()
        return jsonify(
            item=item,
            in_stock=stock.json()["count"] > 0,
            worker=os.getpid(),
            client_created_in=client_pid,
        )

    return app
