"""ACL refusals in the discovery client's Consul source, against py-consul's real client.

A tiny HTTP server plays the agent's answers (a 403 body, an empty answer with Consul's
filtered-by-ACLs header, an empty catalog under default-deny); the secure cluster's
tests (tests/services/cluster/test_secure_cluster.py) check the same against Consul.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from consul_discovery.client import ConsulPermissionError, ConsulQueryError, ConsulSource
from consul_discovery.client.consul_source import _wrap

DENIED = (
    "Permission denied: token with AccessorID 'a1b2' lacks permission 'service:read' "
    'on "order-service"'
)


class Agent(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict[str, str], object]] = {}

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        status, headers, body = self.answers.get(path, (404, {}, ""))
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"X-Consul-Index": "5", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *_args: object) -> None:
        pass


class Stub:
    """The stub agent's answers (path -> status, headers, body) and its address."""

    def __init__(self, handler: type[Agent], address: str) -> None:
        self.answers = handler.answers
        self.address = address


@pytest.fixture
def agent() -> Iterator[Stub]:
    handler = type("OneAgent", (Agent,), {"answers": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Stub(handler, f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_a_403_names_the_permission_and_the_call(agent: Stub) -> None:
    agent.answers["/v1/health/service/order-service"] = (403, {}, DENIED)
    with (
        ConsulSource(agent.address, token="s3cret-token") as source,
        pytest.raises(ConsulPermissionError) as caught,
    ):
        source.resolve("order-service", timeout=5)
    message = str(caught.value)
    assert "lacks 'service:read' on 'order-service'" in message
    assert "read service 'order-service'" in message
    assert "s3cret-token" not in message
    assert isinstance(caught.value, ConsulQueryError)  # callers of the old tree still match


def test_an_empty_answer_filtered_by_acls_is_not_no_instances(agent: Stub) -> None:
    filtered = {"X-Consul-Results-Filtered-By-ACLs": "true"}
    agent.answers["/v1/health/service/order-service"] = (200, filtered, [])
    with (
        ConsulSource(agent.address) as source,
        pytest.raises(ConsulPermissionError, match="node:read"),
    ):
        source.list_instances("order-service")


def test_an_empty_catalog_under_default_deny_is_a_permission_problem(agent: Stub) -> None:
    deny = {"X-Consul-Default-Acl-Policy": "deny"}
    agent.answers["/v1/health/service/order-service"] = (200, deny, [])
    agent.answers["/v1/catalog/services"] = (200, deny, {})
    with (
        ConsulSource(agent.address) as source,
        pytest.raises(ConsulPermissionError, match="no service at all"),
    ):
        source.resolve("order-service", timeout=5)


def test_an_empty_open_catalog_is_still_an_unknown_service(agent: Stub) -> None:
    agent.answers["/v1/health/service/order-service"] = (200, {}, [])
    agent.answers["/v1/catalog/services"] = (200, {"X-Consul-Default-Acl-Policy": "allow"}, {})
    with (
        ConsulSource(agent.address) as source,
        pytest.raises(Exception, match="unknown service 'order-service'"),
    ):
        source.resolve("order-service", timeout=5)


def test_wrap_keeps_other_refusals_as_query_errors() -> None:
    import consul

    error = _wrap(consul.exceptions.BadRequest("400 bad"), "service 'x'", "127.0.0.1:8500")
    assert type(error) is ConsulQueryError
