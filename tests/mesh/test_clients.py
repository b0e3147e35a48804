"""The caller's side: requests through MeshAdapter, its pools, and what it trusts.

An in-process HTTPS server (http.server on a ServerTLS front context, identity from a
real agent) counts the TLS connections it accepts, so the test sees keep-alive reuse
within a generation and new connections after the identity changes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from consul_discovery.mesh import MeshAdapter, ServerTLS
from consul_discovery.mesh.authorizer import Decision
from consul_discovery.mesh.denials import Denials, _metric
from tests.harness.agent import ConsulAgent
from tests.mesh.conftest import identity, mesh_session


class Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    ports: set[int] = set()

    def do_GET(self) -> None:
        type(self).ports.add(self.client_address[1])
        body = json.dumps({"connections": len(type(self).ports)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def web_server(agent: ConsulAgent) -> Iterator[tuple[int, type[Counting]]]:
    handler = type("Counter", (Counting,), {"ports": set()})
    with identity(agent, "web") as web:
        tls = ServerTLS()
        assert web.leaf is not None and web.roots is not None
        tls.update(web.leaf, web.roots)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.socket = tls.front_context().wrap_socket(httpd.socket, server_side=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield httpd.server_address[1], handler
        finally:
            httpd.shutdown()
            httpd.server_close()


def test_pools_are_reused_then_rebuilt_when_the_identity_changes(
    agent: ConsulAgent, web_server: tuple[int, type[Counting]]
) -> None:
    port, handler = web_server
    with identity(agent, "api") as api:
        session = mesh_session(api, "web")
        url = f"https://127.0.0.1:{port}/"
        for _ in range(5):
            assert session.get(url, timeout=5).status_code == 200
        assert len(handler.ports) == 1  # one kept-alive connection
        adapter = session.get_adapter(url)
        assert isinstance(adapter, MeshAdapter)
        old_manager = adapter.poolmanager
        assert api.leaf is not None and api.roots is not None
        api.client_tls.update(api.leaf, api.roots)  # what a renewal or a rotation does
        for _ in range(3):
            assert session.get(url, timeout=5).status_code == 200
        assert adapter.poolmanager is not old_manager
        assert len(handler.ports) == 2  # one new connection for the new generation


def test_the_adapter_trusts_the_mesh_roots_and_nothing_else(
    agent: ConsulAgent, web_server: tuple[int, type[Counting]]
) -> None:
    port, _ = web_server
    with identity(agent, "api") as api:
        session = mesh_session(api, "web")
        assert session.get(f"https://127.0.0.1:{port}/", timeout=5).status_code == 200
        context = api.client_tls.context_for("web")
        assert api.roots is not None
        # requests' verify=True would load the system CA bundle into the context.
        assert len(context.get_ca_certs()) == len(api.roots.roots)


def test_denials_are_counted_per_caller_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    denials = Denials("orders")
    decision = Decision(False, "Matched L4 intention: default/api", "L4", "api")
    metric = _metric()
    before = metric.labels(caller="api", layer="L4")._value.get()
    with caplog.at_level("WARNING", logger="consul_discovery.mesh"):
        for _ in range(3):
            denials.record(decision, index=7)
        denials.record(decision, index=8)  # the intentions changed: say it again
    assert denials.counts == {"api": 4}
    assert metric.labels(caller="api", layer="L4")._value.get() == before + 4
    lines = [r.getMessage() for r in caplog.records if "denied api -> orders" in r.getMessage()]
    assert len(lines) == 2
