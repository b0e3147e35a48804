"""The chain tests' shared parts: in-process JSON instances, and calls through each transport.

``serve_json(answer)`` starts an HTTP instance whose every GET is answered with
``answer(handler)`` as JSON (``echo``: who answered, the path and a routing header).
``calling(kind, consul_url, service)`` yields a ``Calling`` for ``kind``
(``TRANSPORTS``: requests' ServiceClient, the httpx transport, the asyncio httpx
transport): ``get(path, headers=None, source_ip=None)`` sends one GET through discovery
and returns the answer (asserting a 200), ``core`` is the client's core and
``pause(seconds)`` lets its watches run (the asyncio source's run on the caller's loop).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from consul_discovery.client.client import ServiceClient
from consul_discovery.client.httpx_transport import (
    SOURCE_IP_EXTENSION,
    AsyncDiscoveryTransport,
    DiscoveryTransport,
)

TRANSPORTS = ("requests", "httpx", "httpx-async")

Answer = Callable[[BaseHTTPRequestHandler], dict[str, Any]]


def echo(handler: BaseHTTPRequestHandler) -> dict[str, Any]:
    """An answer naming the instance (its server's ``ident`` and ``version``), the path
    and the ``x-routed`` header it saw."""
    server = handler.server
    return {
        "instance": server.ident,  # type: ignore[attr-defined]
        "version": server.version,  # type: ignore[attr-defined]
        "path": handler.path,
        "routed": handler.headers.get("x-routed"),
    }


def serve_json(
    answer: Answer, host: str = "127.0.0.1", port: int = 0, **attributes: Any
) -> ThreadingHTTPServer:
    """A running instance on ``host:port`` (0: a free port) answering every GET with
    ``answer(handler)``; ``attributes`` are set on the server (the handler reads them as
    ``self.server.x``). Stop it with ``shutdown()`` and ``server_close()``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answer(self)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    for name, value in attributes.items():
        setattr(server, name, value)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass(frozen=True)
class Calling:
    """One transport's way to call a service: ``get``, its ``core`` and ``pause``."""

    get: Callable[..., dict[str, Any]]
    core: Any
    pause: Callable[[float], object]

    def until_chained(self, service: str, timeout: float = 10.0) -> None:
        """Call until the core routes ``service`` by its chain (calls before that go to
        the plain service and succeed)."""
        deadline = time.monotonic() + timeout
        while self.core.chain(service) is None:
            assert time.monotonic() < deadline, "the chain was never installed"
            self.get("/warm-up")
            self.pause(0.02)


def _answer(response: Any) -> dict[str, Any]:
    """A 200's JSON (requests' or httpx' response) and its ``x-served-by`` header."""
    assert response.status_code == 200, response.text
    return {**response.json(), "served_by": response.headers.get("x-served-by")}


@contextmanager
def calling(kind: str, consul_url: str, service: str, seed: int = 7) -> Iterator[Calling]:
    """A ``Calling`` through transport ``kind``, closed afterwards."""
    rng = random.Random(seed)
    if kind == "requests":
        client = ServiceClient(consul_url, rng=rng)

        def get(path: str, headers: dict | None = None, source_ip: str | None = None) -> dict:
            return _answer(client.get(service, path, headers=headers, source_ip=source_ip))

        try:
            yield Calling(get, client.core, time.sleep)
        finally:
            client.close()
    elif kind == "httpx":
        sync = DiscoveryTransport(consul_addr=consul_url, only=[service], rng=rng)
        with httpx.Client(transport=sync) as http:

            def get(path: str, headers: dict | None = None, source_ip: str | None = None) -> dict:
                extensions = {SOURCE_IP_EXTENSION: source_ip} if source_ip else {}
                url = f"http://{service}{path}"
                return _answer(http.get(url, headers=headers, extensions=extensions))

            yield Calling(get, sync.core, time.sleep)
    elif kind == "httpx-async":
        loop = asyncio.new_event_loop()
        box: dict[str, Any] = {}

        async def make() -> None:
            box["transport"] = AsyncDiscoveryTransport(consul_url, only=[service], rng=rng)
            box["http"] = httpx.AsyncClient(transport=box["transport"])

        loop.run_until_complete(make())
        http: httpx.AsyncClient = box["http"]

        def get(path: str, headers: dict | None = None, source_ip: str | None = None) -> dict:
            async def one() -> dict:
                extensions = {SOURCE_IP_EXTENSION: source_ip} if source_ip else {}
                url = f"http://{service}{path}"
                return _answer(await http.get(url, headers=headers, extensions=extensions))

            return loop.run_until_complete(one())

        def pause(seconds: float) -> None:
            loop.run_until_complete(asyncio.sleep(seconds))

        try:
            yield Calling(get, box["transport"].core, pause)
        finally:
            loop.run_until_complete(http.aclose())
            loop.close()
    else:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}; got {kind!r}")
