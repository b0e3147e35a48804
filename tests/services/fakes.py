"""Test doubles for the services' tests: an in-process caller, a static source, a server.

``FlaskCaller`` stands in for a discovery client by calling Flask apps' test clients by
service name (or raising a configured discovery error). ``StaticSource`` is an
InstanceSource with a fixed instance list, so a real ``ServiceClient`` can call real
HTTP servers started by ``serve``, without Consul.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests
from flask import Flask
from requests.structures import CaseInsensitiveDict
from werkzeug.serving import make_server

from consul_discovery.client.errors import UnknownServiceError
from consul_discovery.client.instance import Instance, Resolution
from consul_discovery.client.source import Listener
from consul_discovery.client.target import service_of


class FlaskCaller:
    """A discovery-client stand-in: ``request(service, ...)`` runs on that service's app
    (a Flask app through its test client, an ASGI app through Starlette's)."""

    def __init__(self, apps: Mapping[str, Any]) -> None:
        self.apps = dict(apps)  # the test's thread sets these up before use
        self.failures: dict[str, BaseException] = {}  # service -> error to raise instead
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []  # appended by callers
        self._lock = threading.Lock()

    def request(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call ``method path`` on ``service``'s app and return a requests.Response."""
        with self._lock:
            self.calls.append((service, method, path, dict(kwargs)))
        if service in self.failures:
            raise self.failures[service]
        app = self.apps[service]
        if not isinstance(app, Flask):
            return self._asgi(app, service, method, path, kwargs)
        client = app.test_client()
        options: dict[str, Any] = {"method": method, "headers": kwargs.get("headers") or {}}
        if "json" in kwargs:
            options["json"] = kwargs["json"]
        if "data" in kwargs:
            options["data"] = kwargs["data"]
        if kwargs.get("params"):
            options["query_string"] = kwargs["params"]
        answer = client.open(path, **options)
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.get_data()
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response.url = f"http://{service}{path}"
        response.encoding = "utf-8"
        return response

    @staticmethod
    def _asgi(app: Any, service: str, method: str, path: str, kw: dict[str, Any]) -> Any:
        """Call an ASGI app (inventory-service) in process through httpx's ASGI transport."""
        import asyncio

        import httpx

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
                return await client.request(
                    method,
                    path,
                    headers=kw.get("headers") or {},
                    json=kw.get("json"),
                    params=kw.get("params"),
                )

        answer = asyncio.run(send())
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.content
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response.url = f"http://{service}{path}"
        response.encoding = "utf-8"
        return response


class StaticSource:
    """An InstanceSource whose instances are fixed by the test (no Consul)."""

    def __init__(self, instances: Mapping[str, list[tuple[str, int]]]) -> None:
        self.instances = {  # set by the test before the client resolves
            service: tuple(
                Instance(id=f"{service}-{port}", service=service, address=host, port=port)
                for host, port in addrs
            )
            for service, addrs in instances.items()
        }

    def resolve(self, service: str, timeout: float = 5.0) -> Resolution:
        """The fixed instances of ``service``."""
        service = service_of(service)
        if service not in self.instances:
            raise UnknownServiceError(service, list(self.instances))
        return Resolution(service, self.instances[service], index=1, fetched_at=time.monotonic())

    def subscribe(self, service: str, listener: Listener) -> None:
        """Nothing ever changes, so listeners are never called."""

    def close(self) -> None:
        """Nothing to stop."""


@contextmanager
def serve(app: Flask) -> Iterator[int]:
    """Serve ``app`` on a free loopback port in a thread; yields the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-server", daemon=True
    )
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
