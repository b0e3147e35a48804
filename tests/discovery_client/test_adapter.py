"""DiscoveryAdapter: an ordinary requests.Session calling ``http://svc/...`` by name."""

from __future__ import annotations

import random

import pytest
import requests
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from consul_discovery.client import DiscoveryAdapter, ServiceClient, ServiceConfig
from tests.discovery_client.fakes import StaticSource, http_backend, instance, ok, resolution


def make_client(*ports: int) -> ServiceClient:
    res = resolution(*(instance(n, port=p) for n, p in enumerate(ports, 1)))
    return ServiceClient(
        source=StaticSource(res),
        default_config=ServiceConfig(policy="round_robin"),
        rng=random.Random(1),
    )


def test_service_urls_go_through_discovery_and_other_hosts_still_work():
    with http_backend(ok("a")) as a, http_backend(ok("b")) as b, http_backend(ok("plain")) as p:
        client = make_client(a.port, b.port)
        with requests.Session() as session:
            session.mount("http://", DiscoveryAdapter(client))
            assert {session.get("http://svc/x?y=1").text for _ in range(4)} == {"a", "b"}
            direct = session.get(f"http://127.0.0.1:{p.port}/")
            assert direct.text == "plain"
            response = session.get("http://svc/z")
        client.close()
    assert response.url == "http://svc/z"
    assert response.request.url == "http://svc/z"
    assert a.requests[0][1] == "/x?y=1"
    assert p.hits == 1


def test_routing_rules():
    client = make_client()
    adapter = DiscoveryAdapter(client)
    assert adapter.service_for("http://user-service/users") == "user-service"
    assert adapter.service_for("http://svc") == "svc"
    assert adapter.service_for("http://example.com/") is None  # dotted: a real host
    assert adapter.service_for("http://localhost/") is None
    assert adapter.service_for("http://svc:8080/") is None  # an explicit port is an address
    assert adapter.service_for("https://svc/") is None
    assert adapter.service_for("http://127.0.0.1/") is None
    only = DiscoveryAdapter(client, services=["user-service"])
    assert only.service_for("http://user-service/") == "user-service"
    assert only.service_for("http://svc/") is None
    client.close()


def test_per_prefix_mount_and_relative_redirects_stay_in_discovery():
    def app(req):
        if req.path == "/old":
            return redirect("/new")
        return Response(f"at {req.path}")

    with http_backend(app) as a:
        client = make_client(a.port)
        with requests.Session() as session:
            session.mount("http://svc/", DiscoveryAdapter(client, services=["svc"]))
            response = session.get("http://svc/old")
        client.close()
    assert response.text == "at /new"
    assert response.url == "http://svc/new"
    assert [r.status_code for r in response.history] == [302]


def test_discovery_errors_surface_as_requests_connection_errors():
    client = ServiceClient(source=StaticSource(resolution()))
    with requests.Session() as session:
        session.mount("http://", DiscoveryAdapter(client))
        with pytest.raises(requests.ConnectionError, match="no healthy instance") as info:
            session.get("http://svc/")
    client.close()
    assert type(info.value.__cause__).__name__ == "NoHealthyInstanceError"
